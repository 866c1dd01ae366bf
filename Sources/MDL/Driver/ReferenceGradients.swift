import Foundation

extension Driver {
    public struct GradientError: Error, CustomStringConvertible { public let description: String }

    /// The loss and every parameter gradient of one update step for given weights and batch,
    /// computed by the reference interpreter (float64) from mdl's autodiff: the ground truth that
    /// `Tools/torch-check` compares with PyTorch. Weights not in `weights` keep their
    /// initialization with `seed`.
    public static func referenceGradients(path: String, weights: [String: Tensor], batch: [String: Tensor],
                                          step: Int = 0, seed: Int32 = 0) throws -> [(String, Tensor)] {
        let c = compile(path: path, stopAfter: "autodiff")
        guard let m = c.module else { throw GradientError(description: c.diagnostics.render()) }
        let steps = m.functions.filter { $0.kind == .step }
        guard step >= 0 && step < steps.count else { throw GradientError(description: "the recipe has \(steps.count) update step(s); --step \(step) does not exist") }
        let f = steps[step]
        let total = m.globals.reduce(0) { $0 + ($1.type.staticCount ?? 0) }
        guard total <= 1 << 31 else { throw GradientError(description: "the model has \(total) parameter and state elements, too many for the reference interpreter") }
        let interpreter = Interpreter(module: m, seed: seed)
        let unknown = weights.keys.filter { m.global($0) == nil }.sorted()
        guard unknown.isEmpty else { throw GradientError(description: "the weights file has tensors the model does not declare: \(unknown.joined(separator: ", "))") }
        for (name, t) in weights {
            let g = m.global(name)!
            guard t.shape == g.type.shape.compactMap(\.constant) else { throw GradientError(description: "'\(name)' has shape \(t.shape) in the weights file but is declared \(g.type)") }
            interpreter.globals[name] = Tensor(g.type.dtype, t.shape, t.data)
        }
        var inputs: [Tensor] = []
        for a in f.arguments where f.names[a.id] != "key" {
            let full = f.names[a.id] ?? ""
            let field = String(full.split(separator: ".", maxSplits: 1).last ?? Substring(full))
            guard let t = batch[field] else { throw GradientError(description: "the batch file lacks '\(field)' (the step takes \(f.arguments.compactMap { f.names[$0.id] }.filter { $0 != "key" }.joined(separator: ", ")))") }
            let want = f.type(of: a).dtype
            guard t.dtype == want || (want == .f32 && t.dtype == .i32) else {
                throw GradientError(description: "'\(field)' is \(t.dtype.rawValue) in the batch file, but the step takes \(f.type(of: a))")
            }
            inputs.append(Tensor(want, t.shape, t.data))
        }
        let out = try interpreter.run(f.name, inputs, key: seed)
        return [("loss", out[0])] + interpreter.lastGradients.sorted { $0.key < $1.key }.map { ("grad.\($0.key)", $0.value) }
    }
}
