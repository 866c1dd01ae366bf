/// Algebraic simplification: identities that keep the result type (x*1, x+0, x-0, x/1, --x),
/// no-op reshapes, broadcasts, transposes and casts, and chains of reshapes and transposes.
enum AlgebraicSimplification {
    static func run(_ m: Module, _ diags: DiagnosticEngine) -> Module {
        m.eachFunction(diags, pass: "algebraic simplification") { f in
            var defs: [Int: Operation] = [:]
            var r = Rewriter()
            r.rewrite(&f.body) { r, op in
                if let v = simplify(op, f, defs), let result = op.results.first {
                    r.replace(result, with: v)
                    return []
                }
                var op = op
                // Chains: reshape(reshape(x)) -> reshape(x); transpose(transpose(x)) -> one transpose.
                if op.op == .reshape, let inner = defs[op.operands[0].id], inner.op == .reshape {
                    op.operands = [inner.operands[0]]
                    if f.type(of: op.operands[0]) == f.type(of: op.results[0]) { r.replace(op.results[0], with: op.operands[0]); return [] }
                }
                if op.op == .transpose, let inner = defs[op.operands[0].id], inner.op == .transpose,
                   let p = op.attrs["perm"]?.ints, let q = inner.attrs["perm"]?.ints {
                    let composed = p.map { q[$0] }
                    op.operands = [inner.operands[0]]
                    op.attrs["perm"] = .ints(composed)
                    if composed == Array(0..<composed.count) { r.replace(op.results[0], with: op.operands[0]); return [] }
                }
                for res in op.results { defs[res.id] = op }
                return [op]
            }
        }
        return m
    }

    /// A value equal to the op's result (same type), if an identity applies.
    private static func simplify(_ op: Operation, _ f: Function, _ defs: [Int: Operation]) -> Value? {
        guard let result = op.results.first else { return nil }
        let type = f.type(of: result)
        func fill(_ v: Value) -> Double? {
            guard let d = defs[v.id], d.op == .constant else { return nil }
            if case .list? = d.attrs["value"] { return nil }
            return d.attrs["value"]?.doubleValue
        }
        func same(_ v: Value) -> Value? { f.type(of: v) == type ? v : nil }
        switch op.op {
        case .mul:
            if fill(op.operands[1]) == 1 { return same(op.operands[0]) }
            if fill(op.operands[0]) == 1 { return same(op.operands[1]) }
        case .add:
            if fill(op.operands[1]) == 0 { return same(op.operands[0]) }
            if fill(op.operands[0]) == 0 { return same(op.operands[1]) }
        case .sub:
            if fill(op.operands[1]) == 0 { return same(op.operands[0]) }
        case .div:
            if fill(op.operands[1]) == 1 { return same(op.operands[0]) }
        case .neg:
            if let d = defs[op.operands[0].id], d.op == .neg { return same(d.operands[0]) }
        case .reshape, .broadcast, .cast:
            return same(op.operands[0])
        case .transpose:
            if let p = op.attrs["perm"]?.ints, p == Array(0..<p.count) { return same(op.operands[0]) }
        default: break
        }
        return nil
    }
}
