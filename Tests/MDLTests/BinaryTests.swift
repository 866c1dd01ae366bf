import Foundation
import XCTest
@testable import MDL

/// Generated executables end to end: built by `Driver.build` (as `mdlc build`), run as
/// separate processes. Every model's `grad` equals the reference interpreter's; the small
/// models train to their targets; checkpoints resume exactly and corrupt ones are refused;
/// missing data and non-finite losses are reported.
final class BinaryTests: XCTestCase {
    static let directory: URL = {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("mdl-binaries-\(getpid())")
        try? FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        return d
    }()
    private static var built: [String: String] = [:]

    /// The executable of a model file (built once per test run).
    func binary(_ path: String, file: StaticString = #filePath, line: UInt = #line) throws -> String {
        if let b = Self.built[path] { return b }
        let out = Self.directory.appendingPathComponent(URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent).path
        _ = try Driver.build(path: path, output: out)
        Self.built[path] = out
        return out
    }

    func model(_ name: String) -> String { Repo.models.appendingPathComponent(name + ".mdl").path }

    /// Runs a program in `directory`; returns its exit status and its output and errors together.
    @discardableResult
    func run(_ program: String, _ args: [String], in directory: URL = BinaryTests.directory, environment: [String: String] = [:]) -> (status: Int32, output: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: program)
        p.arguments = args
        p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        p.currentDirectoryURL = directory
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        guard (try? p.run()) != nil else { return (-1, "cannot run \(program)") }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// For every model: the binary's `grad` (float32 kernels) against the reference
    /// interpreter (float64) on the same weights, batch and key; per tensor, the error norm
    /// relative to the reference's norm is at most 1e-4 (float32 rounding through the whole
    /// network; measured worst 2.3e-6), or the error is below 1e-7 absolutely for gradients
    /// that are zero in theory (attention key biases: softmax ignores a constant shift).
    func testEveryModelsGradientsMatchTheInterpreter() throws {
        var rng = RobustnessTests.SplitMix(state: 5)
        for url in Repo.modelFiles {
            let name = url.deletingPathExtension().lastPathComponent
            let c = Driver.compile(path: url.path, stopAfter: "gradients")
            guard let m = c.module, let grad = m.functions.first(where: { $0.kind == .grad }) else { XCTFail("\(name): no grad function"); continue }
            let inputs = randomBatch(for: grad, rng: &rng)
            let batchPath = Self.directory.appendingPathComponent("\(name).batch.safetensors").path
            let outPath = Self.directory.appendingPathComponent("\(name).grad.safetensors").path
            try Safetensors.write(inputs.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }, to: batchPath)
            let bin = try binary(url.path)
            let r = run(bin, ["grad", "--batch", batchPath, "--out", outPath, "--seed", "3"])
            guard r.status == 0 else { XCTFail("\(name): grad failed: \(r.output)"); continue }
            let got = try Safetensors.read(outPath)
            let want = try Driver.referenceGradients(path: url.path, weights: [:], batch: inputs, step: 0, seed: 3)
            XCTAssertEqual(Set(got.keys), Set(want.map(\.0)), name)
            var worst = (0.0, "")
            for (key, reference) in want {
                guard let g = got[key], g.shape == reference.shape else { XCTFail("\(name): \(key) missing or misshapen"); continue }
                let diff = zip(g.data, reference.data).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }.squareRoot()
                let norm = reference.data.reduce(0) { $0 + $1 * $1 }.squareRoot()
                let relative = diff / max(norm, 1e-6)
                if relative > worst.0 { worst = (relative, key) }
                // A gradient that is exactly zero in theory (attention key biases) is float32 noise: judged absolutely.
                XCTAssertTrue(relative <= 1e-4 || diff <= 1e-7, "\(name): \(key) differs from the interpreter (relative error \(relative), norm \(norm))")
            }
            print("\(name): \(want.count) tensors, worst relative error \(worst.0) (\(worst.1))")
        }
    }

    func trainedMetrics(_ output: String) -> String { output.split(separator: "\n").filter { $0.hasPrefix("eval") || $0.hasPrefix("metrics") }.joined(separator: "\n") }

    func testSmallModelsReachTheirTargets() throws {
        let perceptron = run(try binary(model("perceptron")), ["train", "--quiet"])
        XCTAssertTrue(perceptron.output.contains("eval train: accuracy 1.0000"), perceptron.output)
        let xor = run(try binary(model("mlp_xor")), ["train", "--quiet"])
        XCTAssertTrue(xor.output.contains("correct 4.0000"), xor.output)
        let coin = run(try binary(model("gan_coin")), ["train", "--quiet"])
        let pHeads = coin.output.split(separator: "\n").first { $0.contains("p_heads") }.flatMap { line in
            line.split(separator: " ").last.flatMap { Double($0) }
        }
        XCTAssertEqual(pHeads ?? 0, 0.3, accuracy: 0.03, coin.output)
    }

    /// mlp_mnist after two epochs (1,874 updates of batch 64, the cosine decay spanning them)
    /// exceeds 95% test accuracy (96.25% measured).
    func testMLPLearnsMNIST() throws {
        let data = Repo.root.appendingPathComponent("data/mnist")
        guard FileManager.default.fileExists(atPath: data.appendingPathComponent("train-images-idx3-ubyte").path) else {
            throw XCTSkip("MNIST is not in data/mnist (Tools/fetch-data mnist)")
        }
        let r = run(try binary(model("mlp_mnist")), ["train", "--data", data.path, "--epochs", "2", "--quiet", "--log", "mnist.jsonl", "--save", "mnist.safetensors"])
        XCTAssertEqual(r.status, 0, r.output)
        let accuracy = r.output.split(separator: "\n").last { $0.hasPrefix("eval test") }.flatMap { line in
            line.split(separator: " ").firstIndex(of: "accuracy").map { Double(line.split(separator: " ")[$0 + 1]) ?? 0 }
        }
        XCTAssertGreaterThan(accuracy ?? 0, 0.95, r.output)
        // The loss curve and the log exist.
        XCTAssertTrue(FileManager.default.fileExists(atPath: Self.directory.appendingPathComponent("mnist.png").path))
        let eval = run(try binary(model("mlp_mnist")), ["eval", "--load", "mnist.safetensors", "--data", data.path])
        XCTAssertTrue(eval.output.contains(String(format: "accuracy %.4f", accuracy ?? 0)), eval.output)
    }

    /// Kernels split their outer loops over the thread pool in fixed chunks and OpenBLAS splits
    /// its products by rows and columns, so 1 and 2 threads give the same bytes (cnn_mnist's
    /// convolutions and activations are large enough to run in parallel).
    func testThreadCountsGiveTheSameResult() throws {
        let data = Repo.root.appendingPathComponent("data/mnist")
        guard FileManager.default.fileExists(atPath: data.appendingPathComponent("train-images-idx3-ubyte").path) else {
            throw XCTSkip("MNIST is not in data/mnist (Tools/fetch-data mnist)")
        }
        let bin = try binary(model("cnn_mnist"))
        for threads in ["1", "2"] {
            let r = run(bin, ["train", "--data", data.path, "--steps", "3", "--quiet", "--threads", threads,
                              "--save", "threads\(threads).safetensors", "--log", "threads\(threads).jsonl"])
            XCTAssertEqual(r.status, 0, r.output)
        }
        let one = try Data(contentsOf: Self.directory.appendingPathComponent("threads1.safetensors"))
        let two = try Data(contentsOf: Self.directory.appendingPathComponent("threads2.safetensors"))
        XCTAssertEqual(one, two, "1 and 2 threads trained different weights")
    }

    /// The kernels compile in modules of their own on parallel threads (`mdlc build --jobs`): one,
    /// two or five modules make executables that train the same weights, byte for byte.
    func testKernelModulesCompiledInParallelMakeTheSameProgram() throws {
        var weights: [Data] = []
        for jobs in [1, 2, 5] {
            let bin = Self.directory.appendingPathComponent("gpt_fsm-j\(jobs)").path
            let report = try Driver.build(path: model("gpt_fsm"), output: bin, jobs: jobs)
            XCTAssertGreaterThan(report.objectBytes, 0)
            let r = run(bin, ["train", "--steps", "3", "--quiet", "--threads", "1", "--save", "jobs\(jobs).safetensors", "--log", "jobs\(jobs).jsonl"])
            XCTAssertEqual(r.status, 0, r.output)
            weights.append(try Data(contentsOf: Self.directory.appendingPathComponent("jobs\(jobs).safetensors")))
        }
        XCTAssertGreaterThan(weights[0].count, 10_000)
        XCTAssertEqual(weights[0], weights[1], "1 and 2 kernel modules trained different weights")
        XCTAssertEqual(weights[0], weights[2], "1 and 5 kernel modules trained different weights")
    }

    /// `--profile` reports each kernel call site of the timed steps, and the GEMM time inside
    /// the kernels that multiply matrices (never more than the kernel's own time).
    func testProfileReportsKernelsAndGEMMTime() throws {
        let r = run(try binary(model("mlp_mnist")), ["bench", "--steps", "3", "--warmup", "2", "--threads", "1", "--profile"])
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertTrue(r.output.contains("profile: "), r.output)
        // Kernel rows: ms, %, calls, GEMM ms, "<function>.k<n>.<ops>:", then the op's text.
        let rows = r.output.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true) }
            .filter { $0.count >= 6 && $0[4].hasSuffix(":") && $0[4].contains(".k") }
        XCTAssertGreaterThan(rows.count, 10, r.output)
        for row in rows {
            XCTAssertEqual(row[2], "3", "a kernel of the 3 timed steps: \(row.joined(separator: " "))")
            XCTAssertLessThanOrEqual(Double(row[3]) ?? .infinity, (Double(row[0]) ?? 0) + 0.001, row.joined(separator: " "))
        }
        // The first layer's product (64 x 784 x 128, with its bias-add and ReLU) takes measurable GEMM time.
        let products = rows.filter { $0.joined(separator: " ").contains("matmul") }
        XCTAssertGreaterThan(products.compactMap { Double($0[3]) }.max() ?? 0, 0, r.output)
        XCTAssertTrue(rows.filter { !$0.joined(separator: " ").contains("matmul") }.contains { Double($0[3]) == 0 }, r.output)
    }

    /// The training loop allocates nothing: the arena holds the temporaries, each result has a
    /// block reused by the next call, and the runtime's loop keeps its buffers. Runs of 3 and 13
    /// steps (one epoch, no evaluation or checkpoint in between) make the same number of heap
    /// allocations, counted by a preloaded malloc wrapper. The benchmark's CNN at batch 2 keeps
    /// clear of OpenBLAS's SkylakeX small-matrix kernels, which malloc a buffer per call.
    func testTrainingLoopAllocatesNothing() throws {
        let counter = Self.directory.appendingPathComponent("count_allocations.so").path
        let (status, text) = Driver.run(try Driver.findLinker(), ["-shared", "-fPIC", "-O2", "-o", counter,
                                                                  Repo.inputs.appendingPathComponent("Runtime/count_allocations.c").path])
        XCTAssertEqual(status, 0, text)
        let bin = try binary(Repo.root.appendingPathComponent("Tools/bench-models/cnn.mdl").path)
        func allocations(steps: Int) -> Int? {
            let r = run(bin, ["train", "--batch", "2", "--steps", "\(steps)", "--log-every", "1000", "--quiet", "--threads", "2",
                              "--save", "alloc\(steps).safetensors", "--log", "alloc\(steps).jsonl"], environment: ["LD_PRELOAD": counter])
            XCTAssertEqual(r.status, 0, r.output)
            return r.output.split(separator: "\n").last { $0.hasPrefix("heap allocations: ") }.flatMap { Int($0.split(separator: " ").last!) }
        }
        let short = allocations(steps: 3), long = allocations(steps: 13)
        XCTAssertNotNil(short)
        XCTAssertEqual(short, long, "10 more training steps made \((long ?? 0) - (short ?? 0)) more heap allocations")
    }

    /// A run stopped after 300 updates and resumed to 1000 ends with the same bytes as an uninterrupted run.
    func testCheckpointsResumeExactlyAndCorruptOnesAreRefused() throws {
        let bin = try binary(model("mlp_xor"))
        XCTAssertEqual(run(bin, ["train", "--quiet", "--save", "full.safetensors", "--log", "full.jsonl"]).status, 0)
        XCTAssertEqual(run(bin, ["train", "--quiet", "--steps", "300", "--save", "part.safetensors", "--log", "part.jsonl"]).status, 0)
        let resumed = run(bin, ["train", "--quiet", "--resume", "part.safetensors", "--save", "resumed.safetensors", "--log", "resumed.jsonl"])
        XCTAssertEqual(resumed.status, 0, resumed.output)
        let full = try Data(contentsOf: Self.directory.appendingPathComponent("full.safetensors"))
        let again = try Data(contentsOf: Self.directory.appendingPathComponent("resumed.safetensors"))
        XCTAssertEqual(full, again, "resuming did not reproduce the uninterrupted run")

        // Truncated: refused with the reason, and nothing else happens.
        let truncated = Self.directory.appendingPathComponent("truncated.safetensors")
        try full.prefix(full.count - 7).write(to: truncated)
        let r = run(bin, ["train", "--resume", truncated.path])
        XCTAssertEqual(r.status, 1, r.output)
        XCTAssertTrue(r.output.contains("truncated"), r.output)
        // A checkpoint of another model.
        let other = run(try binary(model("perceptron")), ["train", "--quiet", "--save", "other.safetensors", "--log", "other.jsonl"])
        XCTAssertEqual(other.status, 0)
        let mismatch = run(bin, ["train", "--resume", "other.safetensors"])
        XCTAssertEqual(mismatch.status, 1, mismatch.output)
        XCTAssertTrue(mismatch.output.contains("checkpoint of the model 'perceptron', not of 'mlp_xor'"), mismatch.output)
    }

    /// `--lr X` sets every optimizer's base rate: the recipe's own rate reproduces the default
    /// run byte for byte (the scale is exactly 1), a smaller one trains less far.
    func testLearningRateFlag() throws {
        let bin = try binary(model("mlp_xor"))
        func trained(_ extra: [String], _ name: String) throws -> (Data, String) {
            let r = run(bin, ["train", "--quiet", "--save", "\(name).safetensors", "--log", "\(name).jsonl"] + extra)
            XCTAssertEqual(r.status, 0, r.output)
            return (try Data(contentsOf: Self.directory.appendingPathComponent("\(name).safetensors")), r.output)
        }
        let (plain, plainOutput) = try trained([], "lr-default")
        let (same, _) = try trained(["--lr", "0.05"], "lr-same")
        XCTAssertEqual(plain, same, "--lr with the recipe's rate changed the run")
        let (_, slow) = try trained(["--lr", "0.0001"], "lr-slow")
        func loss(_ output: String) -> Double { output.split(separator: "\n").last { $0.hasPrefix("eval") }.flatMap { Double($0.split(separator: " ").last!) } ?? .nan }
        XCTAssertGreaterThan(loss(slow), 100 * loss(plainOutput), slow)
    }

    func testMissingDataNamesThePathAndTheFetchCommand() throws {
        let r = run(try binary(model("mlp_mnist")), ["train", "--data", "/nonexistent/mnist"])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.output.contains("/nonexistent/mnist"), r.output)
        XCTAssertTrue(r.output.contains("Tools/fetch-data mnist"), r.output)
    }

    /// A loss that becomes NaN stops training with the step; --check-numerics names the op.
    func testNonFiniteLossStopsWithTheStepAndTheOp() throws {
        let source = Self.directory.appendingPathComponent("diverge.mdl")
        try """
        model Scale() { param w: f32[1] = ones }
        let model = Scale()
        train {
          data = (x = full([64, 1], 1.0))
          optim = sgd(model, lr = 1.0)
          steps = 50
          batch = 8
          step(b) { minimize optim: mean(log(model.w * b.x)) * 3.0 }
        }
        """.write(to: source, atomically: true, encoding: .utf8)
        let bin = try binary(source.path)
        let r = run(bin, ["train", "--quiet"])
        XCTAssertEqual(r.status, 1, r.output)
        XCTAssertTrue(r.output.contains("nan at step"), r.output)
        let checked = run(bin, ["train", "--quiet", "--check-numerics"])
        XCTAssertEqual(checked.status, 1, checked.output)
        XCTAssertTrue(checked.output.contains("= log "), checked.output)
    }
}
