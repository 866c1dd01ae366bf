/// The manifest: the text that tells the runtime what a generated binary contains (globals
/// and their initializers, the data source, optimizers, recipe, and each entry function's
/// inputs and outputs). Format: docs/RUNTIME.md.
enum Manifest {
    static func text(_ p: KernelProgram, hash: UInt64) -> String {
        let m = p.module
        var lines = ["mdl-manifest 1", "module \(escape(m.name))", "hash \(String(hash, radix: 16))"]
        for g in m.globals {
            let shape = g.type.shape.map { String($0.constant ?? 0) }
            lines.append((["global", escape(g.name), g.kind.rawValue, g.type.dtype.rawValue, String(shape.count)] + shape
                          + [escape(g.initializer)] + attrs(g.initAttrs)).joined(separator: " "))
        }
        for e in m.entries where e.kind == .data {
            lines.append((["data", escape(e.type)] + attrs(e.attrs)).joined(separator: " "))
        }
        for e in m.entries where e.kind == .optimizer {
            lines.append((["optimizer", escape(e.name), escape(e.type)] + attrs(e.attrs.filter { $0.key != "params" && $0.key != "schedule" })).joined(separator: " "))
        }
        let recipe = m.recipe.filter { $0.key != "updates" && $0.key != "evals" }
        lines.append((["recipe"] + attrs(recipe)).joined(separator: " "))
        lines.append((["updates"] + (m.recipe["updates"]?.symbols ?? []).map(escape)).joined(separator: " "))
        lines.append((["evals"] + (m.recipe["evals"]?.symbols ?? []).map(escape)).joined(separator: " "))
        for (i, f) in p.functions.enumerated() {
            lines.append("function \(i) \(escape(f.name)) \(f.kind.rawValue) key=\(f.hasKey ? 1 : 0)")
            for (name, b) in zip(f.inputNames, f.inputs) { lines.append("input " + tensor(name, TensorType(f.info(b).dtype, f.info(b).shape))) }
            for (name, type) in zip(f.outputNames, f.outputTypes) { lines.append("output " + tensor(name, type)) }
            lines.append("end")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    static func tensor(_ name: String, _ t: TensorType) -> String {
        ([escape(name), t.dtype.rawValue, String(t.rank)] + t.shape.map { escape($0.description) }).joined(separator: " ")
    }

    /// `key=value` tokens, sorted by key; symbols lose their `@`, lists join with commas.
    static func attrs(_ a: [String: Attr]) -> [String] {
        a.keys.sorted().map { "\(escape($0))=\(escape(value(a[$0]!)))" }
    }

    static func value(_ a: Attr) -> String {
        switch a {
        case .int(let v): return String(v)
        case .float(let v): return String(v)
        case .bool(let v): return v ? "1" : "0"
        case .string(let s), .symbol(let s): return s
        case .dtype(let d): return d.rawValue
        case .dim(let d): return d.description
        case .list(let xs): return xs.map(value).joined(separator: ",")
        }
    }

    /// Bytes outside `A-Za-z0-9._/@+-:,` become `%XX`, so tokens never hold spaces or `=`.
    static func escape(_ s: String) -> String {
        var out = ""
        for byte in s.utf8 {
            let c = Character(UnicodeScalar(byte))
            if byte < 128 && (c.isLetter || c.isNumber || "._/@+-:,".contains(c)) { out.append(c) }
            else { out += "%" + String(format2(byte)) }
        }
        return out
    }

    private static func format2(_ b: UInt8) -> String {
        let hex = Array("0123456789ABCDEF")
        return String([hex[Int(b >> 4)], hex[Int(b & 15)]])
    }

    /// FNV-1a 64 of a text: the program hash checkpoints carry.
    static func hash(_ text: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in text.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return h
    }
}
