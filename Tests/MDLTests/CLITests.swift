import Foundation
import XCTest

/// The `mdlc` executable: exit codes, output and `--help` of every command.
final class CLITests: XCTestCase {
    var mdlc: URL {
        // The test bundle sits next to the products of the same build.
        var dir = Bundle(for: CLITests.self).bundleURL
        while dir.pathExtension == "xctest" || dir.lastPathComponent == "Contents" { dir.deleteLastPathComponent() }
        return dir.appendingPathComponent("mdlc")
    }

    func run(_ args: [String]) throws -> (status: Int32, out: String, err: String) {
        let p = Process()
        p.executableURL = mdlc
        p.arguments = args
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }

    func testVersionNamesLLVMAndOpenBLAS() throws {
        let r = try run(["--version"])
        XCTAssertEqual(r.status, 0)
        XCTAssertTrue(r.out.contains("LLVM 19."), r.out)
        XCTAssertTrue(r.out.contains("OpenBLAS"), r.out)
    }

    func testCheckExitCodes() throws {
        let good = Repo.models.appendingPathComponent("mlp_mnist.mdl").path
        XCTAssertEqual(try run(["check", good]).status, 0)
        let bad = FileManager.default.temporaryDirectory.appendingPathComponent("bad-\(UUID()).mdl")
        try "fn f( {".write(to: bad, atomically: true, encoding: .utf8)
        let r = try run(["check", bad.path])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.err.contains("\(bad.path):1:"), r.err)
        let missing = try run(["check", "/nonexistent/x.mdl"])
        XCTAssertEqual(missing.status, 1)
        XCTAssertTrue(missing.err.contains("no such file: '/nonexistent/x.mdl'"), missing.err)
    }

    func testDumpIRRoundTripsThroughTheCLI() throws {
        let model = Repo.models.appendingPathComponent("perceptron.mdl").path
        let first = try run(["dump-ir", model])
        XCTAssertEqual(first.status, 0, first.err)
        let ir = FileManager.default.temporaryDirectory.appendingPathComponent("p-\(UUID()).mdlir")
        try first.out.write(to: ir, atomically: true, encoding: .utf8)
        let second = try run(["dump-ir", ir.path])
        XCTAssertEqual(second.out, first.out)
        let dot = try run(["dump-ir", "--format", "dot", model])
        XCTAssertTrue(dot.out.hasPrefix("digraph"), dot.out)
        XCTAssertNotEqual(try run(["dump-ir", "--after", "nonsense", model]).status, 0)
    }

    func testHelpForEveryCommand() throws {
        for cmd in [[], ["check"], ["dump-ir"], ["ops"]] {
            let r = try run(cmd + ["--help"])
            XCTAssertEqual(r.status, 0)
            XCTAssertTrue(r.out.contains("USAGE"), r.out)
        }
    }
}
