import XCTest
@testable import MDL

final class SyntaxTests: XCTestCase {
    func tokens(_ s: String) -> [TokenKind] {
        Lexer(file: SourceFile(path: "t.mdl", text: s), diags: DiagnosticEngine()).tokenize().map(\.kind)
    }

    func testLexer() {
        XCTAssertEqual(tokens("let x = 1e-3 + 2 // c\n0..3 /* n /* nested */ */ \"a\\n\""),
                       [.keyword("let"), .identifier("x"), .symbol("="), .float(1e-3), .symbol("+"), .integer(2),
                        .integer(0), .symbol(".."), .integer(3), .string("a\n"), .eof])
        XCTAssertEqual(tokens("x...y **"), [.identifier("x"), .symbol("..."), .identifier("y"), .symbol("**"), .eof])
        XCTAssertEqual(tokens("model train step"), [.identifier("model"), .identifier("train"), .identifier("step"), .eof])
    }

    func testLexerErrors() {
        let d = DiagnosticEngine()
        _ = Lexer(file: SourceFile(path: "t.mdl", text: "a $ \"open\n3x /* never"), diags: d).tokenize()
        XCTAssertEqual(d.diagnostics.map(\.message), ["unexpected character '$'", "unterminated string literal", "invalid suffix 'x' on numeric literal", "unterminated block comment"])
    }

    func parse(_ s: String) -> (SourceModule, DiagnosticEngine) {
        let d = DiagnosticEngine()
        var p = Parser(file: SourceFile(path: "t.mdl", text: s), diags: d)
        return (p.parseFile(), d)
    }

    func testPrecedence() {
        let (m, d) = parse("const a = 1 + 2 * 3 ** 2 == 19 && !false")
        XCTAssertFalse(d.hasErrors)
        guard case .constant(_, let e, _) = m.decls[0], case .binary("&&", let l, _) = e.kind, case .binary("==", let sum, _) = l.kind,
              case .binary("+", _, let prod) = sum.kind, case .binary("*", _, let pw) = prod.kind, case .binary("**", _, _) = pw.kind else {
            return XCTFail("wrong tree")
        }
    }

    func testNewlineEndsAStatementOutsideBrackets() {
        let (m, d) = parse("fn f(x) {\n  let a = x\n  -a\n}\nfn g(x) {\n  (x\n  - 1)\n}")
        XCTAssertFalse(d.hasErrors, d.render())
        guard case .function(let f) = m.decls[0] else { return XCTFail() }
        XCTAssertEqual(f.body.statements.count, 2)
        guard case .function(let g) = m.decls[1] else { return XCTFail() }
        XCTAssertEqual(g.body.statements.count, 1)
    }

    func testLayerAndRecipeStructure() {
        let (m, d) = parse("""
        import std.nn
        model M(h: int = 3) {
          param w: f32[h, 2] = normal(0.1)
          state s: f32[2] = zeros
          subs = [Linear(2, 2) for i in 0..h]
          if h > 2 { extra = Linear(2, 2) } else { }
          fn forward(x: f32[B, ...rest, h]) -> f32[B, 2] { x @ w }
        }
        train { epochs = 1, batch = 2
          step(b) { minimize o: mean(b.x) }
          eval on data.test (b) { acc = 1.0 }
        }
        """)
        XCTAssertFalse(d.hasErrors, d.render())
        XCTAssertEqual(m.decls.count, 3)
        guard case .layer(let l) = m.decls[1] else { return XCTFail() }
        XCTAssertEqual(l.members.count, 5)
        guard case .train(let items, _) = m.decls[2] else { return XCTFail() }
        XCTAssertEqual(items.count, 4)
    }

    func testRecoveryReportsEachBadStatement() {
        let (_, d) = parse("fn f() {\n let = 1\n let b = (2\n let c = 3 +\n}\nfn g( { }\n")
        XCTAssertGreaterThanOrEqual(d.diagnostics.count, 3, d.render())
    }
}
