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
        for cmd in [[], ["check"], ["dump-ir"], ["ops"], ["build"], ["run"], ["grad"]] {
            let r = try run(cmd + ["--help"])
            XCTAssertEqual(r.status, 0)
            XCTAssertTrue(r.out.contains("USAGE"), r.out)
        }
    }

    /// `mdlc build` reports source errors like `check` (all of them, located) and writes nothing;
    /// `--emit` writes the assembly; `mdlc run` builds once and reuses the cached executable.
    func testBuildAndRun() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cli-build-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let bad = dir.appendingPathComponent("bad.mdl")
        try "let a = zeros([2]) + zeros([3])\nlet b = nope\n".write(to: bad, atomically: true, encoding: .utf8)
        let out = dir.appendingPathComponent("bad").path
        let r = try run(["build", bad.path, "-o", out])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.err.contains("\(bad.path):1:") && r.err.contains("\(bad.path):2:"), r.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))

        let xor = Repo.models.appendingPathComponent("mlp_xor.mdl").path
        let asm = dir.appendingPathComponent("xor.s").path
        XCTAssertEqual(try run(["build", xor, "--emit", "asm", "-o", asm]).status, 0)
        XCTAssertTrue((try String(contentsOfFile: asm, encoding: .utf8)).contains("mdl_fn_0:"))

        let cache = dir.appendingPathComponent("cache").path
        func runXor() throws -> (Int32, String) {
            let p = Process()
            p.executableURL = mdlc
            p.arguments = ["run", xor, "--", "train", "--quiet", "--save", dir.appendingPathComponent("w.safetensors").path,
                           "--log", dir.appendingPathComponent("log.jsonl").path]
            p.environment = ProcessInfo.processInfo.environment.merging(["MDL_CACHE_DIR": cache]) { $1 }
            let pipe = Pipe()
            p.standardOutput = pipe
            p.standardError = pipe
            try p.run()
            let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            return (p.terminationStatus, text)
        }
        let first = try runXor()
        XCTAssertEqual(first.0, 0, first.1)
        XCTAssertTrue(first.1.contains("correct 4.0000"), first.1)
        let cached = try FileManager.default.contentsOfDirectory(atPath: cache)
        XCTAssertEqual(cached.count, 1, "\(cached)")
        let built = try FileManager.default.attributesOfItem(atPath: cache + "/" + cached[0])[.modificationDate] as? Date
        XCTAssertEqual(try runXor().0, 0)
        XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: cache + "/" + cached[0])[.modificationDate] as? Date, built, "rebuilt instead of reusing the cache")
    }
}
