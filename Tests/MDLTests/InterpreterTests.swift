import Foundation
import XCTest
@testable import MDL

/// The oracle itself is checked against values computed by hand.
final class InterpreterTests: XCTestCase {
    func run(_ source: String, _ inputs: [Tensor], key: Int32 = 0, file: StaticString = #filePath, line: UInt = #line) throws -> [Tensor] {
        guard let m = compileOK("import std.nn\n" + source, file: file, line: line) else { throw InterpreterError(message: "does not compile") }
        return try Interpreter(module: m, seed: 1).run("p", inputs, key: key)
    }

    func assertClose(_ a: [Double], _ b: [Double], _ tol: Double = 1e-9, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, file: file, line: line)
        for (x, y) in zip(a, b) { XCTAssertEqual(x, y, accuracy: tol, "\(a) vs \(b)", file: file, line: line) }
    }

    let x23 = Tensor(.f32, [2, 3], [1, 2, 3, 4, 5, 6])

    func testElementwiseAndBroadcast() throws {
        let out = try run("proc p(x: f32[2, 3]) { (x + [10.0, 20.0, 30.0], x * reshape([1.0, 2.0], [2, 1]), maximum(x, 3.5), where(x > 2.0, x, -x)) }", [x23])
        assertClose(out[0].data, [11, 22, 33, 14, 25, 36])
        assertClose(out[1].data, [1, 2, 3, 8, 10, 12])
        assertClose(out[2].data, [3.5, 3.5, 3.5, 4, 5, 6])
        assertClose(out[3].data, [-1, -2, 3, 4, 5, 6])
    }

    func testIntegerDivisionAndModulo() throws {
        let out = try run("proc p(a: i32[4]) { (a / 3, a % 3) }", [Tensor(.i32, [4], [7, -7, 6, -1])])
        assertClose(out[0].data, [2, -2, 2, 0])
        assertClose(out[1].data, [1, 2, 0, 2])
    }

    func testReductionsAndSoftmax() throws {
        let out = try run("proc p(x: f32[2, 3]) { (sum(x, axis = 0), mean(x), max(x, axis = 1), argmax(x), logsumexp(x, axis = 1), softmax(x)) }", [x23])
        assertClose(out[0].data, [5, 7, 9])
        assertClose(out[1].data, [3.5])
        assertClose(out[2].data, [3, 6])
        assertClose(out[3].data, [2, 2])
        let lse = log(exp(1.0) + exp(2.0) + exp(3.0))
        assertClose(out[4].data, [lse, lse + 3])
        assertClose(Array(out[5].data[0..<3]), [exp(1 - lse), exp(2 - lse), exp(3 - lse)])
    }

    func testShapeOps() throws {
        let out = try run("proc p(x: f32[2, 3]) { (x.T, x[:, 1:], concat([x, x], axis = 0)[2:, 0], pad(x, [[1, 0]], value = 9.0)[0]) }", [x23])
        assertClose(out[0].data, [1, 4, 2, 5, 3, 6])
        assertClose(out[1].data, [2, 3, 5, 6])
        assertClose(out[2].data, [1, 4])
        assertClose(out[3].data, [9, 1, 2, 3])
    }

    func testGatherScatterUpdateOneHot() throws {
        let out = try run("proc p(x: f32[2, 3], i: i32[3]) { (x[i], scatter_add(x.T, i, 4), update(x, 1, [7.0, 8.0, 9.0]), one_hot(i, 3)) }",
                          [x23, Tensor(.i32, [3], [1, 0, 1])])
        assertClose(out[0].data, [4, 5, 6, 1, 2, 3, 4, 5, 6])
        // rows of x.T are (1,4), (2,5), (3,6), added at indices 1, 0, 1
        assertClose(out[1].data, [2, 5, 4, 10, 0, 0, 0, 0])
        assertClose(out[2].data, [1, 2, 3, 7, 8, 9])
        assertClose(out[3].data, [0, 1, 0, 1, 0, 0, 0, 1, 0])
    }

    func testMatmulConvPool() throws {
        let img = Tensor(.f32, [1, 1, 3, 3], [1, 2, 3, 4, 5, 6, 7, 8, 9])
        let w = Tensor(.f32, [1, 1, 2, 2], [1, 0, 0, 1])
        let out = try run("proc p(x: f32[1, 1, 3, 3], w: f32[1, 1, 2, 2]) { (conv2d(x, w), conv2d(x, w, padding = 1)[0, 0, 0], max_pool2d(x, 2, stride = 1), avg_pool2d(x, 3), reshape(x, [3, 3]) @ reshape(x, [3, 3])) }", [img, w])
        assertClose(out[0].data, [6, 8, 12, 14])
        assertClose(out[1].data, [1, 2, 3, 0])
        assertClose(out[2].data, [5, 6, 8, 9])
        assertClose(out[3].data, [5])
        assertClose(out[4].data, [30, 36, 42, 66, 81, 96, 102, 126, 150])
    }

    func testVectorMatmulCumsumClip() throws {
        let out = try run("proc p(x: f32[2, 3], v: f32[3]) { (x @ v, v @ v, cumsum(x, axis = 1), clip(x, 2.0, 4.0), argmin(x, axis = 0), full([2], 7, dtype = i32)) }",
                          [x23, Tensor(.f32, [3], [1, 0, -1])])
        assertClose(out[0].data, [-2, -2])
        assertClose(out[1].data, [2])
        XCTAssertEqual(out[1].shape, [])
        assertClose(out[2].data, [1, 3, 6, 4, 9, 15])
        assertClose(out[3].data, [2, 2, 3, 4, 4, 4])
        assertClose(out[4].data, [0, 0, 0])
        XCTAssertEqual(out[5], Tensor(.i32, [2], [7, 7]))
    }

    func testConvTransposeIsTheAdjointOfConv() throws {
        // <conv(x, w), y> == <x, conv_transpose(y, w)> for every x, y.
        var rng = RobustnessTests.SplitMix(state: 3)
        func rand(_ shape: [Int]) -> Tensor { Tensor(.f32, shape, (0..<shape.reduce(1, *)).map { _ in Double.random(in: -1...1, using: &rng) }) }
        let x = rand([2, 3, 7, 6]), w = rand([4, 3, 3, 3]), y = rand([2, 4, 4, 3])
        let out = try run("proc p(x: f32[2, 3, 7, 6], w: f32[4, 3, 3, 3], y: f32[2, 4, 4, 3]) { (conv2d(x, w, stride = 2, padding = 1), conv2d_transpose(y, w, stride = 2, padding = 1, output_padding = [0, 1])) }", [x, w, y])
        let lhs = zip(out[0].data, y.data).map(*).reduce(0, +)
        let rhs = zip(x.data, out[1].data).map(*).reduce(0, +)
        XCTAssertEqual(lhs, rhs, accuracy: 1e-9)
    }

    func testRandomIsDeterministicAndWellDistributed() throws {
        let src = "proc p() { (normal([20000]), uniform([20000], low = 2.0, high = 4.0), bernoulli(full([20000], 0.3)), categorical(log(reshape([0.2, 0.8], [1, 2]) + zeros([5000, 2])))) }"
        let a = try run(src, [], key: 5), b = try run(src, [], key: 5), c = try run(src, [], key: 6)
        XCTAssertEqual(a, b, "the same key must give the same numbers")
        XCTAssertNotEqual(a[0], c[0])
        let n = a[0].data, mean = n.reduce(0, +) / Double(n.count)
        let variance = n.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(n.count)
        XCTAssertEqual(mean, 0, accuracy: 0.03)
        XCTAssertEqual(variance, 1, accuracy: 0.05)
        XCTAssertTrue(a[1].data.allSatisfy { $0 >= 2 && $0 < 4 })
        XCTAssertEqual(a[2].data.reduce(0, +) / 20000, 0.3, accuracy: 0.015)
        XCTAssertEqual(a[3].data.reduce(0, +) / 5000, 0.8, accuracy: 0.02)
    }

    func testStateUpdatesApplyAtReturn() throws {
        guard let m = compileOK("""
        layer Counter() {
          state n: f32[] = zeros
          fn bump() { n = n + 1.0
            n }
        }
        let c = Counter()
        proc p() { c.bump() }
        """) else { return }
        let i = Interpreter(module: m)
        _ = try i.run("p", [])
        let second = try i.run("p", [])
        XCTAssertEqual(second[0].scalar, 2)
        XCTAssertEqual(i.globals["c.n"]?.scalar, 2)
    }

    func testOutOfRangeIndexIsAnError() throws {
        XCTAssertThrowsError(try run("proc p(x: f32[2, 3], i: i32[1]) { x[i] }", [x23, Tensor(.i32, [1], [5])]))
    }
}
