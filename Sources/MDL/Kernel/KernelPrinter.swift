/// The text of the Kernel IR (`mdlc dump-ir --after lower`): entry functions with their
/// buffers and size bindings, then steps; kernels print as loop nests.
struct KernelPrinter {
    func print(_ p: KernelProgram) -> String {
        p.functions.map(print).joined(separator: "\n")
    }

    func print(_ f: EntryFunction) -> String {
        func name(_ b: BufferID) -> String { "%" + f.info(b).name + (f.buffers.filter { $0.name == f.info(b).name }.count > 1 ? "#\(b.id)" : "") }
        func decl(_ b: BufferID) -> String {
            let i = f.info(b)
            return "\(name(b)): \(TensorType(i.dtype, i.shape))"
        }
        var out = "entry \(f.kind.rawValue) @\(f.name)(\((f.inputs.map(decl) + (f.hasKey ? ["key"] : [])).joined(separator: ", ")))"
        out += " -> (\(zip(f.outputNames, f.outputs).map { "\($0): \(name($1))" }.joined(separator: ", ")))\n"
        for b in f.bindings { out += "  size \(b.symbol) = \(name(f.inputs[b.input])).shape[\(b.axis)]\n" }
        let globals = f.buffers.indices.filter { if case .global = f.buffers[$0].role { return true }; return false }
        if !globals.isEmpty { out += "  globals \(globals.map { decl(BufferID(id: $0)) }.joined(separator: ", "))\n" }
        func steps(_ s: [Step], _ indent: String) {
            for step in s {
                switch step {
                case .alloc(let b): out += "\(indent)alloc \(decl(b))\n"
                case .free(let b): out += "\(indent)free \(name(b))\n"
                case .copy(let to, let from): out += "\(indent)copy \(name(to)) <- \(name(from))\n"
                case .sequence(let inner): steps(inner, indent)
                case .loop(let i, let lo, let hi, let body):
                    out += "\(indent)loop \(name(i)) in \(name(lo))..<\(name(hi)) {\n"
                    steps(body, indent + "  ")
                    out += "\(indent)}\n"
                case .kernel(let k, _):
                    out += "\(indent)kernel @\(k.name)(\(k.buffers.map(name).joined(separator: ", "))) {\n"
                    out += body(k.body, indent + "  ", name)
                    out += "\(indent)}\n"
                }
            }
        }
        steps(f.steps, "  ")
        return out
    }

    /// A kernel body; `name` prints buffers (kernels that print alike compute alike).
    func body(_ s: [KernelStmt], _ indent: String, _ name: (BufferID) -> String) -> String {
        var out = ""
        for st in s {
            switch st {
            case .loop(let v, let n, let body):
                out += "\(indent)for \(v) in 0..<\(expr(n, name)) {\n"
                out += self.body(body, indent + "  ", name)
                out += "\(indent)}\n"
            case .parallel(let v, let n, let body, let work):
                out += "\(indent)parallel for \(v) in 0..<\(expr(n, name)) (work \(work)) {\n"
                out += self.body(body, indent + "  ", name)
                out += "\(indent)}\n"
            case .store(let b, let i, let v): out += "\(indent)\(name(b))[\(expr(i, name))] = \(expr(v, name))\n"
            case .bind(let v, let e): out += "\(indent)let \(v) = \(expr(e, name))\n"
            case .declare(let v, let e): out += "\(indent)var \(v) = \(expr(e, name))\n"
            case .assign(let v, let e): out += "\(indent)\(v) = \(expr(e, name))\n"
            case .accumulate(let v, let op, let e): out += "\(indent)\(v) = \(op.rawValue)(\(v), \(expr(e, name)))\(op == .add ? " reassoc" : "")\n"
            case .when(let c, let body):
                out += "\(indent)if \(expr(c, name)) {\n"
                out += self.body(body, indent + "  ", name)
                out += "\(indent)}\n"
            case .fail(let c, let code, let message): out += "\(indent)fail \(code) \"\(message)\" if \(expr(c, name))\n"
            case .gemm(let g):
                out += "\(indent)sgemm \(name(g.c))[\(expr(g.cOffset, name))] \(g.accumulate ? "+=" : "=") "
                out += "\(name(g.a))[\(expr(g.aOffset, name))]\(g.transposeA ? "^T" : "") x \(name(g.b))[\(expr(g.bOffset, name))]\(g.transposeB ? "^T" : "")"
                out += " m=\(expr(g.m, name)) n=\(expr(g.n, name)) k=\(expr(g.k, name))"
                if !g.dense { out += " lda=\(expr(g.lda, name)) ldb=\(expr(g.ldb, name)) ldc=\(expr(g.ldc, name))" }
                out += "\n"
            }
        }
        return out
    }

    func expr(_ e: ScalarExpr, _ name: (BufferID) -> String) -> String {
        switch e {
        case .index(let i): return String(i)
        case .constant(let v, let t): return (v == v.rounded() && abs(v) < 1e15 ? String(Int(v)) : String(v)) + ":" + t.rawValue
        case .size(let s): return s
        case .variable(let v): return v
        case .load(let b, let i): return "\(name(b))[\(expr(i, name))]"
        case .unary(let op, let x): return "\(op.rawValue)(\(expr(x, name)))"
        case .binary(let op, let a, let b):
            let infix: [ScalarOp: String] = [.add: "+", .sub: "-", .mul: "*", .div: "/", .mod: "%", .lt: "<", .le: "<=", .gt: ">", .ge: ">=", .eq: "==", .ne: "!=", .and: "&&", .or: "||"]
            if let s = infix[op] { return "(\(expr(a, name)) \(s) \(expr(b, name)))" }
            return "\(op.rawValue)(\(expr(a, name)), \(expr(b, name)))"
        case .select(let c, let a, let b): return "select(\(expr(c, name)), \(expr(a, name)), \(expr(b, name)))"
        case .convert(let x, let t): return "\(t.rawValue)(\(expr(x, name)))"
        case .call(let op, let args): return "\(op.rawValue)(\(args.map { expr($0, name) }.joined(separator: ", ")))"
        case .table(let values, let t, let i):
            return "[\(values.count) x \(t.rawValue) #\(String(Manifest.hash(values.map { String($0) }.joined(separator: ",")) % 0x10000, radix: 16))][\(expr(i, name))]"
        }
    }
}
