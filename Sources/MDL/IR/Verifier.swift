/// Checks the invariants every pass must keep: SSA definitions before uses, result types
/// that match each op's type rule, known globals, well-formed loops and terminators.
public struct Verifier {
    public init() {}

    /// Returns one message per violation; empty when the module is well formed.
    public func verify(_ m: Module) -> [String] {
        var errors: [String] = []
        var names = Set<String>()
        for g in m.globals {
            if !names.insert(g.name).inserted { errors.append("global @\(g.name) is declared twice") }
            if g.type.shape.contains(where: { ($0.constant ?? -1) < 0 }) || g.type.staticCount.map({ $0 > 1 << 40 }) ?? true {
                errors.append("global @\(g.name) must have a static, non-negative shape of at most 2^40 elements, not \(g.type)")
            }
        }
        let optimizers = Set(m.entries.filter { $0.kind == .optimizer }.map(\.name))
        for e in m.entries where e.kind == .optimizer {
            for p in e.attrs["params"]?.symbols ?? [] where m.global(p)?.kind != .param {
                errors.append("optimizer @\(e.name) names @\(p), which is not a parameter")
            }
        }
        var functionNames = Set<String>()
        for f in m.functions {
            if !functionNames.insert(f.name).inserted { errors.append("function @\(f.name) is defined twice") }
            for a in f.arguments where f.type(of: a).shape.contains(where: { ($0.constant ?? 0) < 0 }) {
                errors.append("in @\(f.name): argument of negative size \(f.type(of: a))")
            }
            var defined = Set(f.arguments.map(\.id))
            verify(block: f.body, in: f, module: m, optimizers: optimizers, defined: &defined, terminator: .return, expected: f.resultTypes, errors: &errors)
        }
        return errors
    }

    private func verify(block: Block, in f: Function, module m: Module, optimizers: Set<String>, defined: inout Set<Int>,
                        terminator: OpKind, expected: [TensorType], errors: inout [String]) {
        let at = "in @\(f.name)"
        guard let last = block.operations.last, last.op == terminator else {
            errors.append("\(at): block must end with '\(terminator.name)'")
            return
        }
        for (i, op) in block.operations.enumerated() {
            for v in op.operands where !defined.contains(v.id) {
                errors.append("\(at): '\(op.op.name)' uses a value before its definition")
            }
            if (op.op == .return || op.op == .yield) && i != block.operations.count - 1 {
                errors.append("\(at): '\(op.op.name)' must be the last operation of its block")
            }
            if op.op == .return && terminator != .return || op.op == .yield && terminator != .yield {
                errors.append("\(at): '\(op.op.name)' is not allowed here")
            }
            let operandTypes = op.operands.map { f.type(of: $0) }
            do {
                var types = try op.op.inferTypes(operandTypes, op.attrs)
                if op.op == .global || op.op == .global_set {
                    guard case .symbol(let n)? = op.attrs["name"], let g = m.global(n) else {
                        errors.append("\(at): '\(op.op.name)' names an unknown global")
                        continue
                    }
                    if op.op == .global { types = [g.type] }
                    else if operandTypes[0] != g.type { errors.append("\(at): global.set of @\(n) with \(operandTypes[0]), declared \(g.type)") }
                }
                if op.op == .apply_gradients {
                    for (p, g) in zip(op.attrs["params"]?.symbols ?? [], operandTypes.dropFirst()) where m.global(p)?.type != g {
                        errors.append("\(at): the gradient of @\(p) is \(g), the parameter is \(m.global(p).map { $0.type.description } ?? "unknown")")
                    }
                }
                if op.op == .minimize || op.op == .apply_gradients {
                    if case .symbol(let o)? = op.attrs["optimizer"], optimizers.contains(o) {} else {
                        errors.append("\(at): '\(op.op.name)' names an unknown optimizer")
                    }
                    if operandTypes[0] != TensorType(.f32, []) { errors.append("\(at): '\(op.op.name)' needs an f32[] loss, got \(operandTypes[0])") }
                    if f.kind != .step { errors.append("\(at): '\(op.op.name)' is only allowed in step functions") }
                }
                if op.op == .return || op.op == .yield {
                    if operandTypes != expected {
                        errors.append("\(at): '\(op.op.name)' of (\(operandTypes.map(\.description).joined(separator: ", "))) where (\(expected.map(\.description).joined(separator: ", "))) is expected")
                    }
                }
                let declared = op.results.map { f.type(of: $0) }
                if declared != types {
                    errors.append("\(at): '\(op.op.name)' declares (\(declared.map(\.description).joined(separator: ", "))) but its operands give (\(types.map(\.description).joined(separator: ", ")))")
                }
            } catch let e as TypeError {
                errors.append("\(at): \(e.message)")
            } catch {}
            if op.op == .loop {
                guard op.regions.count == 1 else { errors.append("\(at): 'loop' needs one body"); continue }
                let body = op.regions[0]
                let carried = operandTypes.dropFirst(2)
                let argTypes = body.arguments.map { f.type(of: $0) }
                if argTypes != [TensorType(.i32, [])] + carried {
                    errors.append("\(at): loop body arguments must be the i32[] index and the carried values")
                }
                var inner = defined
                for a in body.arguments { inner.insert(a.id) }
                verify(block: body, in: f, module: m, optimizers: optimizers, defined: &inner, terminator: .yield, expected: Array(carried), errors: &errors)
            } else if !op.regions.isEmpty {
                errors.append("\(at): '\(op.op.name)' cannot have a body")
            }
            for r in op.results { defined.insert(r.id) }
        }
    }
}
