import Foundation
import XCTest
@testable import MDL

/// FileCheck-style tests: each Inputs/IR/*.mdl has a `// RUN: --after PASS` line (default sema;
/// `lower` prints the Kernel IR with one kernel per op, `fusion` the fused Kernel IR, `llvm` the optimized LLVM IR) and CHECK lines matched against the printed IR.
final class IRTextTests: XCTestCase {
    func testIRTextFiles() throws {
        let files = Repo.files(in: "IR")
        XCTAssertGreaterThanOrEqual(files.count, 5, "IR-text tests are missing")
        for url in files {
            let text = try String(contentsOf: url, encoding: .utf8)
            var after = "sema"
            if let r = text.range(of: "// RUN: --after ") { after = String(text[r.upperBound...].prefix { !$0.isWhitespace }) }
            let checks = checkDirectives(text)
            XCTAssertFalse(checks.isEmpty, "\(url.lastPathComponent) has no CHECK lines")
            if let artifact: Driver.Artifact = ["lower": .unfusedKernelIR, "fusion": .kernelIR, "llvm": .llvmIR][after] {
                let printed = String(decoding: try Driver.emit(artifact, path: url.path).parts.joined(), as: UTF8.self)
                for f in fileCheck(printed, checks: checks) { XCTFail("\(url.lastPathComponent): \(f)") }
                continue
            }
            let c = Driver.compile(path: url.path, stopAfter: after)
            guard let m = c.module, c.succeeded else {
                XCTFail("\(url.lastPathComponent): compilation failed:\n\(c.diagnostics.render())")
                continue
            }
            for f in fileCheck(Driver.printIR(m), checks: checks) { XCTFail("\(url.lastPathComponent): \(f)") }
        }
    }

    func testFileCheckItselfCatchesMismatches() {
        let out = "a\nb c\nd"
        XCTAssertTrue(fileCheck(out, checks: [("CHECK", "a", 1), ("CHECK-NEXT", "b", 2), ("CHECK-SAME", "c", 3)]).isEmpty)
        XCTAssertFalse(fileCheck(out, checks: [("CHECK", "a", 1), ("CHECK-NEXT", "d", 2)]).isEmpty)
        XCTAssertFalse(fileCheck(out, checks: [("CHECK", "d", 1), ("CHECK", "a", 2)]).isEmpty)
        XCTAssertFalse(fileCheck(out, checks: [("CHECK", "a", 1), ("CHECK-NOT", "b", 2), ("CHECK", "d", 3)]).isEmpty)
        XCTAssertTrue(fileCheck(out, checks: [("CHECK", "a", 1), ("CHECK-NOT", "x", 2), ("CHECK", "d", 3)]).isEmpty)
        XCTAssertTrue(fileCheck("%12 = add %3", checks: [("CHECK", "%{{[0-9]+}} = add %{{.*}}", 1)]).isEmpty)
        XCTAssertFalse(fileCheck("%x = add", checks: [("CHECK", "%{{[0-9]+}} = add", 1)]).isEmpty)
    }
}
