import XCTest
@testable import MDL

final class IRTests: XCTestCase {
    func testDimPolynomials() {
        let b = Dim(symbol: "B"), t = Dim(symbol: "T")
        XCTAssertEqual(b * t, t * b)
        XCTAssertEqual((b * t * Dim(4)).divided(by: t), b * Dim(4))
        XCTAssertNil((b + Dim(1)).divided(by: Dim(2)))
        XCTAssertEqual((b * Dim(2) + Dim(3) - b).description, "B+3")
        XCTAssertEqual((Dim(0) - b * t).description, "-B*T")
        XCTAssertEqual((b * t + Dim(2)).evaluate(["B": 3, "T": 5]), 17)
    }

    func testBroadcasting() {
        let b = Dim(symbol: "B")
        XCTAssertEqual(broadcastShapes([b, 1, 3], [4, 1]), [b, 4, 3])
        XCTAssertNil(broadcastShapes([b, 3], [2]))
        XCTAssertEqual(broadcastShapes([], [b]), [b])
    }

    func parseIR(_ text: String) -> (Module?, DiagnosticEngine) {
        let d = DiagnosticEngine()
        var p = IRParser(file: SourceFile(path: "t.mdlir", text: text), diags: d)
        return (p.parseModule(), d)
    }

    func testHandWrittenIRParsesVerifiesAndPrintsBack() {
        let text = """
        module @m

        param @w : f32[3,5] = normal {mean = 0.0, std = 0.5}

        func proc @p(%x: f32[2,3], %key: i32[]) -> (out: f32[2,5]) {
          %0 = global {name = @w} : f32[3,5]
          %1 = matmul %x, %0 : f32[2,5]
          %2 = constant {dtype = i32, shape = [], value = 0} : i32[]
          %3 = constant {dtype = i32, shape = [], value = 4} : i32[]
          %4:2 = loop %2, %3, %1, %key {
          ^(%6: i32[], %7: f32[2,5], %8: i32[]):
            %9 = rng.fold %8, %6 : i32[]
            %10 = tanh %7 : f32[2,5]
            yield %10, %9
          } : f32[2,5], i32[]
          return %4
        }

        """
        let (m, d) = parseIR(text)
        XCTAssertFalse(d.hasErrors, d.render())
        guard let m else { return }
        XCTAssertEqual(Verifier().verify(m), [])
        XCTAssertEqual(IRPrinter().print(m), text)
        // Parameters have static shapes.
        let (symbolic, _) = parseIR(text.replacingOccurrences(of: "param @w : f32[3,5]", with: "param @w : f32[3,B]"))
        XCTAssertTrue(Verifier().verify(symbolic!).contains { $0.contains("must have a static, non-negative shape") })
    }

    func testVerifierCatchesTypeAndDominanceErrors() {
        let (m, _) = parseIR("""
        module @m
        func proc @p(%x: f32[2,3]) -> (f32[3,2]) {
          %0 = tanh %x : f32[2,2]
          return %0
        }
        """)
        let problems = Verifier().verify(m!)
        XCTAssertTrue(problems.contains { $0.contains("'tanh' declares (f32[2,2]) but its operands give (f32[2,3])") }, "\(problems)")
        XCTAssertTrue(problems.contains { $0.contains("'return' of (f32[2,2]) where (f32[3,2]) is expected") }, "\(problems)")
    }

    func testIRParseErrorsAreLocated() {
        let (m, d) = parseIR("module @m\nfunc proc @p(%x: f32[2]) -> (f32[2]) {\n  %0 = tanhh %x : f32[2]\n  return %0\n}\n")
        XCTAssertNil(m)
        XCTAssertEqual(d.diagnostics.first?.render(withSource: false), "t.mdlir:3:8: error: unknown op 'tanhh'; did you mean 'tanh'?")
        let (_, d2) = parseIR("module @m\nfunc proc @p() -> () {\n  return %nope\n}\n")
        XCTAssertEqual(d2.diagnostics.first?.message, "use of undefined value '%nope'")
    }

    func testIRDocumentListsEveryOp() throws {
        let doc = try String(contentsOf: Repo.root.appendingPathComponent("docs/IR.md"), encoding: .utf8)
        for op in OpKind.allCases {
            XCTAssertTrue(doc.contains("| `\(op.name)` | \(op.summary.replacingOccurrences(of: "|", with: "\\|")) |"),
                          "docs/IR.md does not describe '\(op.name)' as the op table does (regenerate its op reference from `mdlc ops`)")
        }
    }

    func testOpTypeRules() throws {
        let f = TensorType(.f32, [2, 3])
        XCTAssertEqual(try OpKind.matmul.inferTypes([TensorType(.f32, [5, 2, 3]), TensorType(.f32, [3, 4])], [:]), [TensorType(.f32, [5, 2, 4])])
        XCTAssertThrowsError(try OpKind.matmul.inferTypes([f, f], [:]))
        XCTAssertEqual(try OpKind.sum.inferTypes([f], ["axes": .ints([1]), "keepdims": .bool(true)]), [TensorType(.f32, [2, 1])])
        XCTAssertEqual(try OpKind.conv2d.inferTypes([TensorType(.f32, [1, 3, 28, 28]), TensorType(.f32, [8, 3, 3, 3])],
                                                    ["stride": .ints([2, 2]), "padding": .ints([1, 1]), "dilation": .ints([1, 1])]), [TensorType(.f32, [1, 8, 14, 14])])
        XCTAssertEqual(try OpKind.conv2d_transpose.inferTypes([TensorType(.f32, [1, 8, 14, 14]), TensorType(.f32, [8, 3, 4, 4])],
                                                              ["stride": .ints([2, 2]), "padding": .ints([1, 1]), "output_padding": .ints([0, 0])]), [TensorType(.f32, [1, 3, 28, 28])])
        XCTAssertEqual(try OpKind.take.inferTypes([TensorType(.f32, [10, 4]), TensorType(.i32, [2, 5])], ["axis": .int(0)]), [TensorType(.f32, [2, 5, 4])])
        XCTAssertEqual(try OpKind.scatter_add.inferTypes([TensorType(.f32, [7, 4]), TensorType(.i32, [7])], ["axis": .int(0), "size": .dim(Dim(symbol: "N"))]), [TensorType(.f32, [Dim(symbol: "N"), 4])])
        XCTAssertThrowsError(try OpKind.reshape.inferTypes([f], ["shape": .ints([4, 2])]))
    }
}
