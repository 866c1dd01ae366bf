/// Prints a module as IR text; `IRParser` reads exactly this text back.
public struct IRPrinter {
    public init() {}

    public func print(_ m: Module) -> String {
        var out = "module @\(m.name)\n"
        if !m.globals.isEmpty { out += "\n" }
        for g in m.globals {
            out += "\(g.kind.rawValue) @\(g.name) : \(g.type) = \(g.initializer)\(attrs(g.initAttrs))\n"
        }
        if !m.entries.isEmpty { out += "\n" }
        for e in m.entries {
            out += "\(e.kind.rawValue) @\(e.name) = \(e.type)\(attrs(e.attrs))\n"
        }
        if !m.recipe.isEmpty { out += "\nrecipe\(attrs(m.recipe))\n" }
        for f in m.functions { out += "\n" + print(f) }
        return out
    }

    public func print(_ f: Function) -> String {
        var names: [Int: String] = [:]
        var used = Set<String>()
        var counter = 0
        func fresh(_ v: Value, preferred: String?) -> String {
            if let p = preferred, !used.contains(p), p.first.map({ !$0.isNumber }) ?? false {
                used.insert(p)
                names[v.id] = p
                return p
            }
            while used.contains(String(counter)) { counter += 1 }
            let n = String(counter)
            counter += 1
            used.insert(n)
            names[v.id] = n
            return n
        }
        var header = "func \(f.kind.rawValue) @\(f.name)("
        header += f.arguments.map { "%\(fresh($0, preferred: f.names[$0.id])): \(f.type(of: $0))" }.joined(separator: ", ")
        header += ") -> ("
        header += f.resultTypes.enumerated().map { i, t in
            i < f.resultNames.count && !f.resultNames[i].isEmpty ? "\(f.resultNames[i]): \(t)" : "\(t)"
        }.joined(separator: ", ")
        header += ")"
        if !f.attrs.isEmpty { header += " attributes" + attrs(f.attrs) }
        var out = header + " {\n"
        func name(_ v: Value) -> String { "%" + (names[v.id] ?? "?\(v.id)") }
        func emit(_ block: Block, indent: String) {
            for op in block.operations {
                var line = indent
                if !op.results.isEmpty {
                    let first = fresh(op.results[0], preferred: nil)
                    for r in op.results.dropFirst() { _ = fresh(r, preferred: nil) }
                    line += op.results.count == 1 ? "%\(first) = " : "%\(first):\(op.results.count) = "
                }
                line += op.op.name
                if !op.operands.isEmpty { line += " " + op.operands.map(name).joined(separator: ", ") }
                line += attrs(op.attrs)
                if !op.regions.isEmpty {
                    line += " {\n"
                    for region in op.regions {
                        let args = region.arguments.map { "%\(fresh($0, preferred: nil)): \(f.type(of: $0))" }.joined(separator: ", ")
                        line += indent + "^(\(args)):\n"
                        out += line
                        line = ""
                        emit(region, indent: indent + "  ")
                    }
                    line += indent + "}"
                }
                if !op.results.isEmpty && op.op != .global {
                    line += " : " + op.results.map { f.type(of: $0).description }.joined(separator: ", ")
                } else if op.op == .global {
                    line += " : \(f.type(of: op.results[0]))"
                }
                out += line + "\n"
            }
        }
        emit(f.body, indent: "  ")
        return out + "}\n"
    }

    func attrs(_ a: [String: Attr]) -> String {
        if a.isEmpty { return "" }
        return " {" + a.keys.sorted().map { "\($0) = \(attr(a[$0]!))" }.joined(separator: ", ") + "}"
    }

    func attr(_ a: Attr) -> String {
        switch a {
        case .int(let v): return String(v)
        case .float(let v): return formatFloat(v)
        case .bool(let b): return b ? "true" : "false"
        case .string(let s): return "\"" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n") + "\""
        case .symbol(let s): return "@" + s
        case .dtype(let d): return d.rawValue
        case .list(let xs): return "[" + xs.map(attr).joined(separator: ", ") + "]"
        case .dim(let d): return d.description
        }
    }
}

/// Shortest text that parses back to the same Double, always with a '.', an exponent or a name.
func formatFloat(_ v: Double) -> String {
    if v.isNaN { return "nan" }
    if v.isInfinite { return v < 0 ? "-inf" : "inf" }
    return v.description
}
