import Foundation
import XCTest
@testable import MDL

/// Optimizer updates against torch.optim: the trajectories in Inputs/Optimizers/torch.json come
/// from Tools/optim-reference.py (float64). Each case is compiled as an mdl recipe whose loss is
/// sum(w * g), so the gradient of step t is exactly g_t, and run through autodiff, optimizer
/// lowering and the reference interpreter.
final class OptimizerTests: XCTestCase {
    struct Reference: Decodable {
        struct Case: Decodable {
            let optimizer: String
            let hyper: [String: Double]
            let clip_norm: Double?
            let schedule: String?
            let schedule_args: [String: Double]
            let trajectory: [[Double]]
        }
        let total_steps: Int
        let w0: [Double]
        let grads: [[Double]]
        let cases: [Case]
    }

    func testUpdatesMatchTorchOptim() throws {
        let url = Repo.inputs.appendingPathComponent("Optimizers/torch.json")
        let ref = try JSONDecoder().decode(Reference.self, from: Data(contentsOf: url))
        XCTAssertGreaterThanOrEqual(ref.cases.count, 10)
        let n = ref.w0.count
        let gradList = "[" + ref.grads.map { "[" + $0.map { "\($0)" }.joined(separator: ", ") + "]" }.joined(separator: ", ") + "]"
        for c in ref.cases {
            var args = c.hyper.sorted { $0.key < $1.key }.map { k, v in k == "nesterov" ? "nesterov = \(v != 0)" : "\(k) = \(v)" }
            if let clip = c.clip_norm { args.append("clip_norm = \(clip)") }
            if let s = c.schedule { args.append("schedule = \(s)(\(c.schedule_args.sorted { $0.key < $1.key }.map { "\($0.key) = \($0.value)" }.joined(separator: ", ")))") }
            let label = "\(c.optimizer)(\(args.joined(separator: ", ")))"
            let source = """
            layer P() { param w: f32[\(n)] = zeros }
            let model = P()
            fn gradients() { (g = f32(\(gradList)),) }
            train {
              data = gradients()
              o = \(c.optimizer)(model, \(args.joined(separator: ", ")))
              steps = \(ref.total_steps)
              batch = 1
              step(b) { minimize o: sum(model.w * b.g[0]) }
            }
            """
            let comp = compile(source, name: "optimizer.mdl", stopAfter: "dce")
            guard let m = comp.module, comp.succeeded else { XCTFail("\(label): \(comp.diagnostics.render())"); continue }
            let interpreter = Interpreter(module: m)
            interpreter.globals["model.w"] = Tensor(.f32, [n], ref.w0)
            interpreter.globals["o.total_steps"] = .scalar(Double(ref.total_steps))
            for (t, (g, expected)) in zip(ref.grads, c.trajectory).enumerated() {
                _ = try interpreter.run("step0", [Tensor(.f32, [1, n], g)], key: 0)
                let w = interpreter.globals["model.w"]!.data
                for (a, e) in zip(w, expected) where abs(a - e) > 1e-6 * abs(e) + 1e-12 {
                    XCTFail("\(label) update \(t + 1): mdl \(w), torch \(expected)")
                    break
                }
            }
        }
    }
}
