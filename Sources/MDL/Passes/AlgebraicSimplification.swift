/// Algebraic simplification: identities that keep the result type (x*1, x+0, x-0, x/1, --x),
/// no-op reshapes, broadcasts, transposes and casts, chains of reshapes and transposes, and
/// sums of zero pads whose windows meet (the gradients of adjacent slices) as one concatenation.
enum AlgebraicSimplification {
    static func run(_ m: Module, _ diags: DiagnosticEngine) -> Module {
        m.eachFunction(diags, pass: "algebraic simplification") { f in
            var defs: [Int: Operation] = [:]
            var r = Rewriter()
            try r.rewrite(&f.body) { r, op in
                if let v = simplify(op, f, defs), let result = op.results.first {
                    r.replace(result, with: v)
                    return []
                }
                if let joined = try joinedPads(op, f, defs) {
                    for new in joined { defs[new.results[0].id] = new }
                    r.replace(op.results[0], with: joined.last!.results[0])
                    return joined
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

    /// The ops computing add(pad(a), pad(b)) as pad(concat(a, b)), or as concat(a, b) when that fills
    /// the result, if both pads put zeros around their operand (no interior), have the add's type,
    /// and their windows are equal on every axis but one, where b's starts where a's ends. The
    /// gradients of adjacent slices (an unrolled loop's steps, an LSTM's gates) are summed so, one at
    /// a time: each full-size padded term and its addition become one growing concatenation.
    private static func joinedPads(_ op: Operation, _ f: Function, _ defs: [Int: Operation]) throws -> [Operation]? {
        guard op.op == .add, let p = defs[op.operands[0].id], let q = defs[op.operands[1].id] else { return nil }
        let type = f.type(of: op.results[0])
        func zeroPad(_ o: Operation) -> (x: Value, low: [Dim], high: [Dim])? {
            guard o.op == .pad, o.attrs["value"]?.doubleValue == 0, (o.attrs["interior"]?.ints ?? []).allSatisfy({ $0 == 0 }),
                  f.type(of: o.results[0]) == type, let low = o.attrs["low"]?.dims, let high = o.attrs["high"]?.dims else { return nil }
            return (o.operands[0], low, high)
        }
        guard var a = zeroPad(p), var b = zeroPad(q) else { return nil }
        let axes = (0..<type.rank).filter { a.low[$0] != b.low[$0] || a.high[$0] != b.high[$0] }
        guard axes.count == 1, let axis = axes.first else { return nil }
        if b.low[axis] + f.type(of: b.x).shape[axis] == a.low[axis] { swap(&a, &b) }
        guard a.low[axis] + f.type(of: a.x).shape[axis] == b.low[axis] else { return nil }
        // Concatenations of concatenations along the same axis are one.
        func parts(_ v: Value) -> [Value] {
            guard let c = defs[v.id], c.op == .concat, let k = c.attrs["axis"]?.intValue, (k + type.rank) % type.rank == axis else { return [v] }
            return c.operands
        }
        let builder = IRBuilder(f)
        builder.location = op.location
        let joined = try builder.emit(.concat, parts(a.x) + parts(b.x), ["axis": .int(axis)])
        var high = a.high
        high[axis] = b.high[axis]
        if !(a.low + high).allSatisfy({ $0 == 0 }) {
            try builder.emit(.pad, [joined], ["low": .dims(a.low), "high": .dims(high), "value": .float(0)])
        }
        return builder.operations
    }
}
