/// Graphviz rendering of a module: one cluster per function, one node per op, edges for data flow.
struct DotPrinter {
    func print(_ m: Module) -> String {
        var out = "digraph \"\(m.name)\" {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\", fontsize=10];\n"
        for (fi, f) in m.functions.enumerated() {
            out += "  subgraph cluster_\(fi) {\n    label=\"\(f.kind.rawValue) @\(f.name)\";\n"
            var producer: [Int: String] = [:]
            for a in f.arguments {
                let id = "f\(fi)_a\(a.id)"
                producer[a.id] = id
                out += "    \(id) [shape=ellipse, label=\"%\(f.names[a.id] ?? String(a.id))\\n\(f.type(of: a))\"];\n"
            }
            var counter = 0
            func emit(_ block: Block) {
                for op in block.operations {
                    let id = "f\(fi)_op\(counter)"
                    counter += 1
                    var label = op.op.name
                    if case .symbol(let s)? = op.attrs["name"] { label += " @\(s)" }
                    if let r = op.results.first { label += "\\n\(f.type(of: r))" }
                    out += "    \(id) [label=\"\(label)\"];\n"
                    for o in op.operands { if let p = producer[o.id] { out += "    \(p) -> \(id);\n" } }
                    for r in op.results { producer[r.id] = id }
                    for region in op.regions {
                        for a in region.arguments { producer[a.id] = id }
                        emit(region)
                    }
                }
            }
            emit(f.body)
            out += "  }\n"
        }
        return out + "}\n"
    }
}
