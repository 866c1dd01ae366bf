import Foundation
import XCTest
@testable import MDL

/// Properties every model of the zoo must have: it checks, its IR round-trips, and the
/// interpreter runs its step and eval functions on a tiny batch to finite values.
final class ModelTests: XCTestCase {
    func testEveryArchitectureHasAModel() {
        let names = Set(Repo.modelFiles.map { $0.deletingPathExtension().lastPathComponent })
        let zoo = ["perceptron", "mlp_xor", "mlp_mnist", "cnn_mnist", "cnn_fashion", "resnet_mnist", "vit_mnist", "fff_mnist",
                   "deepsets", "gpt_char", "gpt_fsm", "gpt_arith", "rnn_char", "lm_compress", "gcn_mutag", "gat_mutag",
                   "gnn_mnist", "autoencoder", "vae", "gan_coin", "gan_mnist", "ddpm_mnist", "ddpm_cond", "score_2d",
                   "realnvp", "flow_matching", "ppo_cartpole"]
        for z in zoo { XCTAssertTrue(names.contains(z), "Models/\(z).mdl is missing") }
    }

    /// After the front end and after every pass, the printed IR parses back to identical text.
    func testModelsCheckAndRoundTrip() throws {
        for url in Repo.modelFiles {
            for stage in Pipeline.stageNames {
                let c = Driver.compile(path: url.path, stopAfter: stage)
                guard let m = c.module, c.succeeded else {
                    XCTFail("\(url.lastPathComponent) after \(stage):\n\(c.diagnostics.render())")
                    break
                }
                let text = Driver.printIR(m)
                let reparsed = Driver.compile(path: url.lastPathComponent + ".mdlir", stopAfter: "sema", source: text)
                guard let m2 = reparsed.module else {
                    XCTFail("\(url.lastPathComponent): the IR after \(stage) does not parse:\n\(reparsed.diagnostics.render())")
                    continue
                }
                XCTAssertEqual(Driver.printIR(m2), text, "\(url.lastPathComponent): print-parse-print after \(stage) is not identical")
            }
        }
    }

    func testInterpreterRunsEveryModel() throws {
        for url in Repo.modelFiles {
            let c = Driver.compile(path: url.path)
            guard let m = c.module else { continue } // reported by testModelsCheckAndRoundTrip
            do {
                try InterpreterHarness(module: m).runSteps()
            } catch {
                XCTFail("\(url.lastPathComponent): \(error)")
            }
        }
    }
}

/// Feeds a module's functions with a tiny batch: generator output when the data is synthetic,
/// otherwise random values shaped and ranged like the builtin dataset's fields.
struct InterpreterHarness {
    let module: Module
    let interpreter: Interpreter
    var batchSize = 2
    /// Seeds the synthetic batch, so every run sees the same data.
    var seed: UInt64 = 17

    init(module: Module) {
        self.module = module
        self.interpreter = Interpreter(module: module, seed: 7)
    }

    func runSteps() throws {
        let data = module.entries.first { $0.kind == .data }
        let train = try batch(split: "train", data: data)
        for f in module.functions where f.kind == .step {
            let out = try interpreter.run(f.name, train, key: 3)
            try expectFinite(out, f)
        }
        for f in module.functions where f.kind == .eval {
            let split = String(f.name.dropFirst("eval.".count))
            let out = try interpreter.run(f.name, try batch(split: split, data: data), key: 5)
            try expectFinite(out, f)
        }
    }

    func expectFinite(_ out: [Tensor], _ f: Function) throws {
        guard out.count == f.resultTypes.count else { throw InterpreterError(message: "@\(f.name) returned \(out.count) values") }
        // The interpreter itself checks each result against its declared type under the bound sizes.
        for t in out {
            if let bad = t.data.first(where: { !$0.isFinite }) { throw InterpreterError(message: "@\(f.name) returned a non-finite value \(bad)") }
        }
    }

    func batch(split: String, data: Entry?) throws -> [Tensor] {
        guard let data else { return [] }
        if data.type == "generator" {
            guard case .symbol(let fn)? = data.attrs[split] ?? data.attrs["train"] else { throw InterpreterError(message: "no generator for \(split)") }
            let full = try interpreter.run(fn, [], key: 11)
            return full.map { $0.rows(0, min(batchSize, $0.shape[0])) }
        }
        var rng = RobustnessTests.SplitMix(state: seed)
        let b = batchSize
        func rand(_ n: Int, _ upper: Double) -> [Double] { (0..<n).map { _ in Double.random(in: 0..<upper, using: &rng) } }
        func ints(_ n: Int, _ upper: Int) -> [Double] { (0..<n).map { _ in Double(Int.random(in: 0..<upper, using: &rng)) } }
        switch data.type {
        case "mnist", "fashion_mnist": return [Tensor(.f32, [b, 784], rand(b * 784, 1)), Tensor(.i32, [b], ints(b, 10))]
        case "digits": return [Tensor(.f32, [b, 64], rand(b * 64, 1)), Tensor(.i32, [b], ints(b, 10))]
        case "shakespeare":
            let t = data.attrs["context"]?.intValue ?? 8
            return [Tensor(.i32, [b, t], ints(b * t, 96)), Tensor(.i32, [b, t], ints(b * t, 96))]
        case "mutag", "mnist_graphs":
            // Two small graphs (a triangle and a path), edges in both directions.
            let features = data.type == "mutag" ? 7 : 3
            let src: [Double] = [0, 1, 1, 2, 2, 0, 3, 4, 4, 5], dst: [Double] = [1, 0, 2, 1, 0, 2, 4, 3, 5, 4]
            var x = [Double](repeating: 0, count: 6 * features)
            for i in 0..<6 { x[i * features + i % features] = 1 }
            return [Tensor(.f32, [6, features], x), Tensor(.i32, [10], src), Tensor(.i32, [10], dst),
                    Tensor(.i32, [6], [0, 0, 0, 1, 1, 1]), Tensor(.i32, [2], [0, 1])]
        default:
            throw InterpreterError(message: "no test batch for data source '\(data.type)'")
        }
    }
}
