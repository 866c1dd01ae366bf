/// Constant folding: elementwise ops and casts whose operands are all filled constants become one
/// filled constant, computed with the reference interpreter's rules (float64).
enum ConstantFolding {
    static func run(_ m: Module, _ diags: DiagnosticEngine) -> Module {
        m.eachFunction(diags, pass: "constant folding") { f in
            var fills: [Int: Double] = [:]   // value id -> fill value of a `constant` without a list
            var r = Rewriter()
            r.rewrite(&f.body) { _, op in
                if op.op == .constant, case .list? = op.attrs["value"] {} else if op.op == .constant, let v = op.attrs["value"]?.doubleValue {
                    fills[op.results[0].id] = v
                    return [op]
                }
                let values = op.operands.map { fills[$0.id] }
                guard !op.operands.isEmpty, values.allSatisfy({ $0 != nil }), op.results.count == 1,
                      let folded = fold(op, values.map { $0! }, operandTypes: op.operands.map(f.type(of:))) else { return [op] }
                let t = f.type(of: op.results[0])
                var attr: Attr = t.dtype == .f32 ? .float(folded) : .bool(folded != 0)
                if t.dtype == .i32 {
                    // An integer result outside i32 keeps its op: folding must not change its meaning.
                    guard let i = exactInt(folded), fitsInt32(i) else { return [op] }
                    attr = .int(i)
                }
                fills[op.results[0].id] = folded
                return [Operation(op: .constant, operands: [], results: op.results,
                                  attrs: ["value": attr, "dtype": .dtype(t.dtype), "shape": .dims(t.shape)], location: op.location)]
            }
        }
        return m
    }

    private static func fold(_ op: Operation, _ x: [Double], operandTypes: [TensorType]) -> Double? {
        if OpKind.unary.contains(op.op) { return Interpreter.unaryRule(op.op)(x[0]) }
        if OpKind.binary.contains(op.op) {
            let v = Interpreter.binaryRule(op.op, integer: operandTypes[0].dtype != .f32)(x[0], x[1])
            return v.isFinite || x.contains(where: { !$0.isFinite }) ? v : nil
        }
        switch op.op {
        case .select: return x[0] != 0 ? x[1] : x[2]
        case .cast:
            guard case .dtype(let d)? = op.attrs["dtype"] else { return nil }
            return d == .f32 ? x[0] : d == .i32 ? x[0].rounded(.towardZero) : (x[0] != 0 ? 1 : 0)
        case .broadcast, .reshape: return x[0]
        default: return nil
        }
    }
}
