/// Common-subexpression elimination: an op with no effects whose kind, operands and attributes
/// match an earlier op in the same or an enclosing block reuses that op's results. Random ops
/// are pure functions of (key, stream, index), so identical ones are equal too.
enum CommonSubexpressionElimination {
    /// An op's identity; its hash is computed once, so table lookups do not rehash the attributes.
    struct Key: Hashable {
        let op: OpKind
        let operands: [Int]
        let attrs: [String: Attr]
        let types: [TensorType]
        private let hash: Int
        init(op: OpKind, operands: [Int], attrs: [String: Attr], types: [TensorType]) {
            self.op = op
            self.operands = operands
            self.attrs = attrs
            self.types = types
            var h = Hasher()
            h.combine(op)
            h.combine(operands)
            h.combine(types)
            h.combine(attrs)
            hash = h.finalize()
        }
        func hash(into hasher: inout Hasher) { hasher.combine(hash) }
        static func == (a: Key, b: Key) -> Bool {
            a.hash == b.hash && a.op == b.op && a.operands == b.operands && a.types == b.types && a.attrs == b.attrs
        }
    }

    static func run(_ m: Module, _ diags: DiagnosticEngine) -> Module {
        m.eachFunction(diags, pass: "CSE") { f in
            var scopes: [[Key: [Value]]] = [[:]]
            var r = Rewriter()
            func visit(_ block: inout Block) {
                var out: [Operation] = []
                for var op in block.operations {
                    op.operands = op.operands.map(r.resolve)
                    if !op.regions.isEmpty {
                        for i in op.regions.indices {
                            scopes.append([:])
                            visit(&op.regions[i])
                            scopes.removeLast()
                        }
                    }
                    guard !op.op.hasEffects, op.regions.isEmpty, !op.results.isEmpty else { out.append(op); continue }
                    let key = Key(op: op.op, operands: op.operands.map(\.id), attrs: op.attrs, types: op.results.map(f.type(of:)))
                    if let earlier = scopes.reversed().lazy.compactMap({ $0[key] }).first {
                        for (a, b) in zip(op.results, earlier) { r.replace(a, with: b) }
                        continue
                    }
                    scopes[scopes.count - 1][key] = op.results
                    out.append(op)
                }
                block.operations = out
            }
            visit(&f.body)
        }
        return m
    }
}
