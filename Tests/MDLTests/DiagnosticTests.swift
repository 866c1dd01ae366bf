import Foundation
import XCTest
@testable import MDL

/// `expected-error` tests: every error a bad program must produce is annotated in it, and the
/// compiler must report exactly those (same line, optional column, message containing the text).
final class DiagnosticTests: XCTestCase {
    struct Expectation: Hashable { let line: Int; let column: Int?; let text: String }

    static func expectations(in text: String) -> [Expectation] {
        var out: [Expectation] = []
        let pattern = try! NSRegularExpression(pattern: #"expected-error(?:@([+-]\d+)(?::(\d+))?)?\s*\{\{(.*?)\}\}"#)
        for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let s = String(line)
            for m in pattern.matches(in: s, range: NSRange(s.startIndex..., in: s)) {
                let offset = Range(m.range(at: 1), in: s).map { Int(s[$0])! } ?? 0
                let column = Range(m.range(at: 2), in: s).map { Int(s[$0])! }
                let msg = String(s[Range(m.range(at: 3), in: s)!])
                out.append(Expectation(line: n + 1 + offset, column: column, text: msg))
            }
        }
        return out
    }

    func testDiagnosticFiles() throws {
        let files = Repo.files(in: "Diagnostics")
        XCTAssertGreaterThanOrEqual(files.count, 40, "the diagnostic suite is missing cases")
        for url in files {
            let text = try String(contentsOf: url, encoding: .utf8)
            let expected = DiagnosticTests.expectations(in: text)
            XCTAssertFalse(expected.isEmpty, "\(url.lastPathComponent) has no expected-error annotation")
            let c = Driver.compile(path: url.path)
            XCTAssertNil(c.module, "\(url.lastPathComponent) compiled without errors")
            var unmatched = c.diagnostics.diagnostics.filter { $0.severity == .error }
            for e in expected {
                if let i = unmatched.firstIndex(where: { d in
                    guard let loc = d.location, d.range.file?.path == url.path else { return false }
                    return loc.line == e.line && (e.column == nil || loc.column == e.column) && d.message.contains(e.text)
                }) {
                    unmatched.remove(at: i)
                } else {
                    XCTFail("\(url.lastPathComponent):\(e.line)\(e.column.map { ":\($0)" } ?? ""): expected error containing '\(e.text)' was not reported")
                }
            }
            for d in unmatched { XCTFail("\(url.lastPathComponent): unexpected error: \(d.render(withSource: false))") }
        }
    }

    func testRenderedFormat() {
        let c = compile("fn f(x: f32[B, 3]) -> f32[B, 3] {\n  x + y\n}\n", name: "render.mdl")
        let text = c.diagnostics.render()
        XCTAssertTrue(text.contains("render.mdl:2:7: error: unknown name 'y'"), text)
        XCTAssertTrue(text.contains("\n  x + y\n      ^"), text)
    }

    func testAllErrorsOfAFileAreReported() {
        let c = compile("layer A( { }\nfn f( { }\nlet x = )\n", name: "many.mdl")
        XCTAssertGreaterThanOrEqual(errors(c).count, 3, c.diagnostics.render())
    }
}
