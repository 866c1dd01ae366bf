import Foundation
import XCTest
@testable import MDL

/// Thousands of mutated programs must end in diagnostics or success, never a crash or a hang.
final class RobustnessTests: XCTestCase {
    /// A small deterministic generator so failures reproduce.
    struct SplitMix: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    /// Token-ish pieces of a program: identifiers, numbers, punctuation, whitespace runs.
    static func pieces(_ text: String) -> [String] {
        var out: [String] = []
        var current = ""
        var kind = -1
        for ch in text {
            let k = ch.isLetter || ch.isNumber || ch == "_" || ch == "." ? 0 : ch.isWhitespace ? 1 : 2
            if k != kind || k == 2 {
                if !current.isEmpty { out.append(current) }
                current = ""
                kind = k
            }
            current.append(ch)
        }
        if !current.isEmpty { out.append(current) }
        return out
    }

    static func mutate(_ text: String, _ rng: inout SplitMix) -> String {
        var p = pieces(text)
        guard p.count > 2 else { return text }
        let junk = ["(", ")", "[", "]", "{", "}", ",", "=", "@", "..", "...", "loop", "for", "fn", "layer", "param", "\"", "/*", "-", "**", "é", "\u{0}", "1e999", "99999999999999999999", "x", "B", "minimize", "train", "step"]
        for _ in 0..<Int.random(in: 1...4, using: &rng) {
            let i = Int.random(in: 0..<p.count, using: &rng)
            switch Int.random(in: 0..<6, using: &rng) {
            case 0: p.remove(at: i)
            case 1: p.insert(p[i], at: i)
            case 2: p.swapAt(i, Int.random(in: 0..<p.count, using: &rng))
            case 3: p.insert(junk.randomElement(using: &rng)!, at: i)
            case 4: p[i] = junk.randomElement(using: &rng)!
            default: p = Array(p[0..<i])
            }
            if p.isEmpty { break }
        }
        return p.joined()
    }

    func testMutatedModelsNeverCrash() throws {
        var rng = SplitMix(state: 42)
        var compiled = 0, rejected = 0
        let sources = (Repo.modelFiles + [Repo.models.appendingPathComponent("std/nn.mdl")]).compactMap { url in
            (try? String(contentsOf: url, encoding: .utf8)).map { (url, $0) }
        }
        for (url, text) in sources {
            for _ in 0..<120 {
                let mutated = RobustnessTests.mutate(text, &rng)
                let c = Driver.compile(path: url.path, source: mutated)
                if c.succeeded { compiled += 1 } else {
                    rejected += 1
                    XCTAssertTrue(c.diagnostics.hasErrors, "\(url.lastPathComponent): a failed compilation reported no error")
                }
            }
        }
        XCTAssertGreaterThan(compiled + rejected, 2000)
    }

    func testRandomBytes() {
        var rng = SplitMix(state: 7)
        for _ in 0..<300 {
            let bytes = (0..<Int.random(in: 0..<400, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            _ = compile(String(decoding: bytes, as: UTF8.self), name: "bytes.mdl")
        }
    }

    func testDeepNestingIsAnErrorNotACrash() {
        for opener in ["(", "[", "-", "!", "f(", "{"] {
            let closer = ["(": ")", "[": "]", "f(": ")", "{": "}"][opener] ?? ""
            let deep = String(repeating: opener, count: 5000) + "1" + String(repeating: closer, count: 5000)
            let c = compile("fn g() { \(deep) }", name: "deep.mdl")
            XCTAssertTrue(c.diagnostics.hasErrors, "nesting with '\(opener)' was accepted")
        }
        let blocks = String(repeating: "if true { ", count: 3000) + String(repeating: "} ", count: 3000)
        XCTAssertTrue(compile("fn g() { \(blocks) }", name: "deep.mdl").diagnostics.hasErrors)
    }

    func testUnboundedRecursionIsAnError() {
        let c = compile("fn f(x) { f(x) }\nproc p() { f(1.0) }\n", name: "rec.mdl")
        XCTAssertTrue(errors(c).contains { $0.contains("nests more than 64 levels") }, c.diagnostics.render())
        let c2 = compile("layer A() { a = A() }\nlet m = A()\n", name: "rec.mdl")
        XCTAssertTrue(errors(c2).contains { $0.contains("contains itself") }, c2.diagnostics.render())
    }

    /// Inputs that once crashed the compiler (integer overflow, NaN to Int, unbounded nesting,
    /// negative axes): each must end in a diagnostic or a clean compile, never a trap.
    func testHostileInputsFromReview() throws {
        let sources = [
            ("proc f() -> i32[] { i32(1e30) }", nil),
            ("proc f() -> i32[] { i32(0.0 / 0.0) }", nil),
            ("proc f() -> i32[] { i32(1.0) * 9223372036854775807 * 2 }", "does not fit in i32"),
            ("proc f(x: f32[B]) -> f32[B] { let y = x[0:9223372036854775807:2] ; x }", "is too long"),
            ("proc f() -> f32[] {\n var s = 0.0\n for i in -1..9223372036854775807 { s = s + 1.0 }\n s\n}", "at most 4096 items"),
            ("proc f() -> i32[2] { i32(1.0) * [9223372036854775807, 1] }", "does not fit in i32"),
            ("layer L() { param w: f32[65536, 65536, 65536, 65536] = zeros }\nlet l = L()", "too many elements"),
            ("proc f() { reshape(zeros([65536, 65536, 65536, 65536]), [0]) }", "too many elements"),
        ]
        for (source, message) in sources {
            let c = Driver.compile(path: "hostile.mdl", source: source)
            if let message { XCTAssertTrue(errors(c).contains { $0.contains(message) }, "\(source): \(c.diagnostics.render())") }
        }
        let ir = [
            "module @m\nfunc proc @f(%a: f32[2]) -> (f32[2]) {\n  %9223372036854775807:2 = loop %a, %a : f32[2], f32[2]\n  return %a\n}\n",
            "module @m\nfunc proc @f(%a: f32[4]) -> (f32[4]) {\n  %0 = slice %a {starts = [0], ends = [9223372036854775807], strides = [2]} : f32[4]\n  return %a\n}\n",
            "module @m\nparam @w : f32[3] = zeros\noptimizer @o = sgd {lr = 0.1, params = [@w]}\nfunc step @s() -> () {\n  %0 = global {name = @w} : f32[3]\n  %1 = sum %0 {axes = [-1]} : f32[]\n  minimize %1 {optimizer = @o}\n  return\n}\n",
            "module @m\nparam @w : f32[-3] = zeros\n",
            "module @m\nfunc proc @f() -> () {\n  %0 = constant {dtype = f32, shape = [], value = " + String(repeating: "[", count: 100_000) + "\n",
            "module @m\nfunc proc @f(%a: i32[]) -> () {\n" + String(repeating: "  %x = loop %a, %a {\n  ^(%i: i32[]):\n", count: 5_000) + "\n",
        ]
        for text in ir {
            for stage in Pipeline.stageNames { _ = Driver.compile(path: "hostile.mdlir", stopAfter: stage, source: text) }
        }
    }

    func testMutatedIRTextNeverCrashes() throws {
        var rng = SplitMix(state: 99)
        let url = Repo.models.appendingPathComponent("mlp_mnist.mdl")
        guard let m = Driver.compile(path: url.path).module else { return XCTFail("mlp_mnist does not compile") }
        let text = Driver.printIR(m)
        for _ in 0..<400 {
            _ = Driver.compile(path: "fuzz.mdlir", source: RobustnessTests.mutate(text, &rng))
        }
    }
}
