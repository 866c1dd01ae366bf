/// Shared machinery of the simplification passes: walk every block in order, let a rule replace
/// an op's results by existing values, and rename later uses. Each pass is its own file.
struct Rewriter {
    /// Replacements made so far (old value id -> new value).
    private(set) var replaced: [Int: Value] = [:]

    mutating func replace(_ old: Value, with new: Value) { replaced[old.id] = new }
    func resolve(_ v: Value) -> Value {
        var v = v
        while let r = replaced[v.id] { v = r }
        return v
    }

    /// Rewrites each block: `rule` sees each op (operands already renamed) and returns the ops to
    /// keep in its place (none to drop it after recording replacements).
    mutating func rewrite(_ block: inout Block, _ rule: (inout Rewriter, Operation) throws -> [Operation]) rethrows {
        var out: [Operation] = []
        for var op in block.operations {
            op.operands = op.operands.map(resolve)
            for i in op.regions.indices { try rewrite(&op.regions[i], rule) }
            out += try rule(&self, op)
        }
        block.operations = out
    }
}

extension Module {
    /// Runs `body` on every function, reporting internal errors against the module.
    func eachFunction(_ diags: DiagnosticEngine, pass: String, _ body: (Function) throws -> Void) {
        for f in functions {
            do { try body(f) } catch let e as InternalError {
                diags.error("internal compiler error in \(pass) of @\(f.name): \(e.message)", at: .unknown)
            } catch {}
        }
    }
}
