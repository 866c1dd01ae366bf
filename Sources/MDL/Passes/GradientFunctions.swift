/// Adds, for every step function `S`, a function `grad.S` of kind `grad` that returns the
/// loss and the gradient of every parameter the step updates (named `grad.<parameter>`) and
/// changes no state: what a binary's `grad` command runs to cross-check mdl against PyTorch.
/// Runs after autodiff, which put the gradients into `apply_gradients`.
enum GradientFunctions {
    static func run(_ m: Module, _ diags: DiagnosticEngine) -> Module {
        var functions: [Function] = []
        for f in m.functions {
            functions.append(f)
            guard f.kind == .step else { continue }
            let g = f.copy(name: "grad.\(f.name)", kind: .grad)
            guard let apply = g.body.operations.first(where: { $0.op == .apply_gradients }) else { continue }
            let params = apply.attrs["params"]?.symbols ?? []
            g.body.operations = g.body.operations.compactMap { op in
                switch op.op {
                case .apply_gradients, .global_set: return nil
                case .return:
                    var r = op
                    r.operands = apply.operands
                    return r
                default: return op
                }
            }
            g.resultTypes = apply.operands.map { g.type(of: $0) }
            g.resultNames = ["loss"] + params.map { "grad.\($0)" }
            functions.append(g)
        }
        m.functions = functions
        return m
    }
}
