extension Elaborator {
    /// Runs a block's statements; its value is that of its last expression statement.
    func execBlock(_ block: CodeBlock, _ scope: Scope, owner: LayerInstance?) -> SVal {
        var last: SVal = .tuple([])
        for (i, stmt) in block.statements.enumerated() {
            let isLast = i == block.statements.count - 1
            if !isLast, case .expr(let e) = stmt, !hasEffect(e) {
                error("the value of this expression is unused; if it continues the previous line, end that line with the operator or wrap the expression in parentheses", e.range)
            }
            last = exec(stmt, scope, owner: owner)
            if !isLast { last = .tuple([]) }
        }
        // After a syntax error inside the block its value is unknown; uses of it stay quiet.
        return block.isMalformed ? .error : last
    }

    /// Calls may update state; any other expression statement before the end of a block does nothing.
    private func hasEffect(_ e: Expr) -> Bool {
        switch e.kind {
        case .call, .conditional, .error: return true
        default: return false
        }
    }

    private func exec(_ stmt: Stmt, _ scope: Scope, owner: LayerInstance?) -> SVal {
        switch stmt {
        case .expr(let e):
            return eval(e, scope)
        case .binding(let isVar, let names, let value, let range):
            let v = eval(value, scope)
            if names.count == 1 {
                bind(names[0], v, isVar: isVar, scope, range)
            } else {
                switch v {
                case .tuple(let xs) where xs.count == names.count, .list(let xs) where xs.count == names.count:
                    for (n, x) in zip(names, xs) { bind(n, x, isVar: isVar, scope, range) }
                case .error:
                    for n in names { bind(n, .error, isVar: isVar, scope, range) }
                default:
                    error("cannot unpack \(v.kindName) into \(names.count) names", value.range)
                    for n in names { bind(n, .error, isVar: isVar, scope, range) }
                }
            }
            return .tuple([])
        case .assign(let target, let value, let range):
            assign(target, eval(value, scope), scope, range)
            return .tuple([])
        case .forLoop(let variable, let sequence, let body, _):
            let seq = eval(sequence, scope)
            guard let items = compileTimeSequence(seq, at: sequence.range) else { return .tuple([]) }
            for item in items {
                let inner = Scope(parent: scope)
                inner.values[variable] = item
                _ = execBlock(body, inner, owner: owner)
            }
            return .tuple([])
        case .loop(let variable, let sequence, let body, let range):
            runtimeLoop(variable, sequence, body, scope, owner: owner, at: range)
            return .tuple([])
        case .conditional(let condition, let then, let otherwise, _):
            let c = eval(condition, scope)
            switch c {
            case .bool(let b):
                if b { return execBlock(then, Scope(parent: scope), owner: owner) }
                if let o = otherwise { return execBlock(o, Scope(parent: scope), owner: owner) }
            case .error: return .error
            case .tensor:
                error("the condition of 'if' must be known at compile time; use where(cond, a, b) to select between tensors", condition.range)
                return .error
            default:
                error("the condition of 'if' must be a bool, found \(c.kindName)", condition.range)
                return .error
            }
            return .tuple([])
        case .minimize(let optimizer, let loss, let range):
            minimize(optimizer, loss, scope, at: range)
            return .tuple([])
        }
    }

    private func bind(_ name: String, _ v: SVal, isVar: Bool, _ scope: Scope, _ range: SourceRange) {
        if scope.values[name] != nil {
            error("'\(name)' is already defined in this block", range)
        }
        scope.values[name] = v
        if isVar { scope.mutable.insert(name) } else { scope.mutable.remove(name) }
    }

    func assign(_ target: Expr, _ v: SVal, _ scope: Scope, _ range: SourceRange) {
        switch target.kind {
        case .name(let n):
            if metricSink != nil && !(scope.owner(of: n)?.mutable.contains(n) ?? false) {
                // In an eval block, `name = value` defines a metric (and may reuse a function's name).
                if builder?.inLoop == true {
                    error("a metric is defined once per batch, not inside a run-time 'loop'; carry a 'var' and assign the metric after the loop", target.range)
                    return
                }
                metricSink!.append((n, v, target.range))
                return
            }
            if let owner = scope.owner(of: n) {
                if case .global(let g) = owner.values[n]! {
                    setState(g, v, at: target.range)
                    return
                }
                if !owner.mutable.contains(n) {
                    if let f = owner.parameterOf[n] {
                        error("cannot assign to '\(n)', a parameter of '\(f)'; copy it into a 'var' first", target.range)
                    } else {
                        error("cannot assign to '\(n)', which is declared with 'let'; declare it with 'var' to change it", target.range)
                    }
                    return
                }
                owner.values[n] = v
                return
            }
            error("cannot assign to undeclared '\(n)'; declare it with 'var \(n) = ...'\(suggestion(for: n, among: scope.allNames))", target.range)
        case .member(let base, let name):
            let b = eval(base, scope)
            guard case .layer(let inst) = b else {
                if !b.isError { error("only state members of layers can be assigned, not members of \(b.kindName)", target.range) }
                return
            }
            guard let member = inst.members[name] else {
                error("layer '\(inst.decl.name)' has no member '\(name)'\(suggestion(for: name, among: Array(inst.members.keys)))", target.range)
                return
            }
            guard case .global(let g) = member else {
                error("'\(name)' is not a state tensor of '\(inst.decl.name)' and cannot be assigned", target.range)
                return
            }
            setState(g, v, at: target.range)
        default:
            error("cannot assign to this expression", target.range)
        }
    }

    private func setState(_ g: String, _ v: SVal, at range: SourceRange) {
        guard let global = module.global(g) else { return }
        guard global.kind == .state else {
            error("cannot assign to the parameter '\(g)'; parameters change only through an optimizer (use 'state' for tensors you update)", range)
            return
        }
        guard let b = builder else { error("state can only be updated inside functions", range); return }
        if v.isError { return }
        guard b.function.kind == .step || b.function.kind == .proc || b.function.kind == .data || b.function.kind == .metric else {
            error("evaluation cannot update state '\(g)'", range)
            return
        }
        guard let t = toTensor(v, dtype: global.type.dtype, at: range) else {
            error("state '\(g)' is \(global.type), found \(v.kindName)", range)
            return
        }
        var value = t
        let actual = b.function.type(of: t)
        if actual != global.type {
            if actual.rank == 0 || broadcastShapes(actual.shape, global.type.shape) == global.type.shape, actual.dtype == global.type.dtype {
                guard case .tensor(let bv) = emit(.broadcast, [t], ["shape": .dims(global.type.shape)], at: range) else { return }
                value = bv
            } else {
                error("cannot assign \(actual) to state '\(g)' of type \(global.type)", range)
                return
            }
        }
        if b.inLoop {
            error("state cannot be updated inside a run-time 'loop'; carry a 'var' and assign after the loop", range)
            return
        }
        b.append(Operation(op: .global_set, operands: [value], results: [], attrs: ["name": .symbol(g)], location: range))
        b.cacheGlobal(g, value)
    }

    func compileTimeSequence(_ seq: SVal, at range: SourceRange) -> [SVal]? {
        switch seq {
        case .range(.int(let lo), .int(let hi), let reversed):
            let (length, overflow) = hi.subtractingReportingOverflow(lo)
            if hi > lo && (overflow || length > 4096) {
                error("a compile-time iteration may have at most 4096 items (this range has \(overflow ? "more than 2^63" : String(length))); use 'loop' for a run-time loop", range)
                return nil
            }
            let items = lo < hi ? (lo..<hi).map(SVal.int) : []
            return reversed ? items.reversed() : items
        case .list(let xs), .tuple(let xs): return xs
        case .error: return nil
        case .range:
            error("a 'for' loop needs compile-time bounds; use 'loop' for a run-time loop", range)
            return nil
        default:
            error("cannot iterate over \(seq.kindName)", range)
            return nil
        }
    }

    /// Names assigned in a loop body that are declared outside it: the loop-carried variables.
    private func assignedNames(_ block: CodeBlock, _ out: inout [String], declared: Set<String>) {
        var declared = declared
        for s in block.statements {
            switch s {
            case .binding(_, let names, _, _): declared.formUnion(names)
            case .assign(let t, _, _):
                if case .name(let n) = t.kind, !declared.contains(n), !out.contains(n) { out.append(n) }
            case .forLoop(_, _, let b, _), .loop(_, _, let b, _): assignedNames(b, &out, declared: declared)
            case .conditional(_, let t, let o, _):
                assignedNames(t, &out, declared: declared)
                if let o { assignedNames(o, &out, declared: declared) }
            default: break
            }
        }
    }

    private func runtimeLoop(_ variable: String, _ sequence: Expr, _ body: CodeBlock, _ scope: Scope, owner: LayerInstance?, at range: SourceRange) {
        guard let b = builder else { error("a run-time 'loop' can only appear inside a function", range); return }
        let seq = eval(sequence, scope)
        guard case .range(let loV, let hiV, let reversed) = seq else {
            if !seq.isError { error("'loop' iterates over a range 'a..b', found \(seq.kindName)", sequence.range) }
            return
        }
        guard let lo = toTensor(loV, dtype: .i32, at: sequence.range), let hi = toTensor(hiV, dtype: .i32, at: sequence.range),
              b.function.type(of: lo) == TensorType(.i32, []), b.function.type(of: hi) == TensorType(.i32, []) else {
            error("loop bounds must be integers", sequence.range)
            return
        }
        var carried: [String] = []
        assignedNames(body, &carried, declared: [variable])
        var owners: [Scope] = []
        var inits: [Value] = []
        var carriedNames: [String] = []
        for n in carried {
            guard let o = scope.owner(of: n), o.mutable.contains(n), let v = o.values[n] else { continue }
            guard let t = toTensor(v, dtype: nil, at: range) else {
                error("the loop variable '\(n)' must be a tensor or a number, found \(v.kindName)", range)
                return
            }
            owners.append(o)
            inits.append(t)
            carriedNames.append(n)
        }
        let index = b.function.newValue(TensorType(.i32, []))
        let args = inits.map { b.function.newValue(b.function.type(of: $0)) }
        for (o, (n, a)) in zip(owners, zip(carriedNames, args)) { o.values[n] = .tensor(a) }
        b.beginLoopBody(index: index)
        let inner = Scope(parent: scope)
        var i: SVal = .tensor(index)
        if reversed {
            // for i in reversed(lo..hi): i = hi - 1 - (index - lo)
            i = binary("-", binary("-", binary("+", hiV, loV, range), .int(1), range), .tensor(index), range)
        }
        inner.values[variable] = i
        _ = execBlock(body, inner, owner: owner)
        var yields: [Value] = []
        var poisoned = Set<String>()
        for (o, (n, a)) in zip(owners, zip(carriedNames, args)) {
            let value = o.values[n]!
            let t = toTensor(value, dtype: b.function.type(of: a).dtype, at: range) ?? a
            if value.isError {
                poisoned.insert(n)
                yields.append(a)
            } else if b.function.type(of: t) != b.function.type(of: a) {
                error("the loop variable '\(n)' changes from \(b.function.type(of: a)) to \(b.function.type(of: t)) inside the loop", range)
                poisoned.insert(n)
                yields.append(a)
            } else {
                yields.append(t)
            }
        }
        b.append(Operation(op: .yield, operands: yields, results: [], attrs: [:]))
        let ops = b.endLoopBody()
        let results = args.map { b.function.newValue(b.function.type(of: $0)) }
        b.append(Operation(op: .loop, operands: [lo, hi] + inits, results: results, attrs: [:],
                           regions: [Block(arguments: [index] + args, operations: ops)], location: range))
        for (k, (o, n)) in zip(owners, carriedNames).enumerated() { o.values[n] = poisoned.contains(n) ? .error : .tensor(results[k]) }
    }
}
