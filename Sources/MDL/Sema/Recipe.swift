/// The train recipe and procedures: turns `train { }` into step, eval and data functions,
/// optimizer and data entries, and recipe attributes; turns each `proc` into a function.
extension Elaborator {
    static let recipeSettings: [String: String] = [
        "epochs": "int", "steps": "int", "batch": "int", "seed": "int", "rounds": "int", "folds": "int",
        "eval_every": "int", "log_every": "int", "data": "data",
    ]

    func buildRecipe(_ items: [TrainItem], range: SourceRange) {
        let scope = Scope(parent: globalsScope)
        var dataset: Dataset?
        var dataFailed = false
        var given = Set<String>()
        var stepItems: [(String, CodeBlock, SourceRange)] = []
        for item in items {
            switch item {
            case .setting(let name, let value, let r):
                if scope.values[name] != nil { error("the recipe setting '\(name)' is given twice", r); continue }
                given.insert(name)
                inRecipe = true
                pendingPath = name
                let v: SVal
                if name == "data" {
                    v = dataSource(value, scope)
                } else {
                    v = evalCompileTime(value, scope: scope)
                }
                pendingPath = nil
                inRecipe = false
                scope.values[name] = v
                if case .optimizer = v { continue }
                if case .error = v { dataFailed = dataFailed || name == "data"; continue }
                guard let expected = Elaborator.recipeSettings[name] else {
                    error("unknown recipe setting '\(name)'\(suggestion(for: name, among: Array(Elaborator.recipeSettings.keys))); settings are \(Elaborator.recipeSettings.keys.sorted().joined(separator: ", ")) and optimizers", r)
                    continue
                }
                switch (expected, v) {
                case ("int", .int(let i)):
                    if i <= 0 && name != "seed" { error("'\(name)' must be positive, got \(i)", value.range); continue }
                    module.recipe[name] = .int(i)
                case ("data", .dataset(let d)):
                    dataset = d
                default:
                    error("the recipe setting '\(name)' must be \(expected == "int" ? "an integer" : "a data source"), found \(v.kindName)", value.range)
                }
            case .step(let batch, let body, let r):
                stepItems.append((batch, body, r))
            case .eval: break
            }
        }
        if given.contains("epochs") && given.contains("steps") {
            error("give either 'epochs' or 'steps', not both", range)
        }
        if stepItems.isEmpty { error("the train recipe needs a 'step(batch) { minimize optimizer: loss }'", range) }
        if stepItems.count > 1 { error("the train recipe may have one 'step' block; put several 'minimize' statements in it", stepItems[1].2) }
        if !given.contains("batch") && dataset != nil { error("the train recipe needs a 'batch' size", range) }
        if !given.contains("epochs") && !given.contains("steps") { error("the train recipe needs 'epochs' or 'steps'", range) }
        if let (batch, body, r) = stepItems.first {
            guard let d = dataset else {
                if dataFailed { return }
                error("the train recipe needs a data source ('data = mnist(\"data/mnist\")' or a generator function)", range)
                return
            }
            let count = countMinimize(body)
            if count == 0 { error("the step has no 'minimize optimizer: loss' statement", r) }
            var steps: [Attr] = []
            for k in 0..<count {
                let f = Function(name: "step\(k)", kind: .step)
                let b = startFunction(f, training: true, batch: batch, fields: d.splits["train"] ?? [], scope: scope)
                minimizeTarget = k
                minimizeSeen = 0
                stepLoss = nil
                inStepBody = true
                _ = execBlock(body, b, owner: nil)
                inStepBody = false
                guard let loss = stepLoss else {
                    // This minimize sits in a branch not taken, or its loss had errors (already reported).
                    builder = nil
                    continue
                }
                finishFunction(f, results: [("loss", loss)])
                steps.append(.symbol(f.name))
            }
            if steps.isEmpty && count > 0 && !diags.hasErrors {
                error("every 'minimize' of the step is in an 'if' branch that is not taken, so training would update nothing", r)
            }
            module.recipe["updates"] = .list(steps)
        }
        var evals: [Attr] = []
        for item in items {
            guard case .eval(let splitExpr, let batch, let body, let r) = item else { continue }
            var fields: [(String, TensorType)] = []
            var kind = FunctionKind.metric
            var name = "metrics"
            if let splitExpr {
                if dataFailed { continue }
                guard case .member(let base, let split) = splitExpr.kind, case .name(let dn) = base.kind, dn == "data", let d = dataset else {
                    error("'eval on' takes a split of the recipe's data, such as data.test", splitExpr.range)
                    continue
                }
                guard let f = d.splits[split] else {
                    error("the data has no split '\(split)'\(suggestion(for: split, among: Array(d.splits.keys))); its splits are \(d.splits.keys.sorted().joined(separator: ", "))", splitExpr.range)
                    continue
                }
                fields = f
                kind = .eval
                name = "eval.\(split)"
            }
            if module.function(name) != nil { error("a second eval block for the same data", r); continue }
            let f = Function(name: name, kind: kind)
            let s = startFunction(f, training: false, batch: batch ?? "batch", fields: fields, scope: scope)
            metricSink = []
            _ = execBlock(body, s, owner: nil)
            var results: [(String, Value)] = []
            let defined = metricSink!.count
            for (n, v, mr) in metricSink! {
                guard let t = toTensor(v, dtype: .f32, at: mr), builder!.function.type(of: t) == TensorType(.f32, []) else {
                    if !v.isError { error("the metric '\(n)' must be a scalar f32[] (a mean over the batch), found \(describeValue(v))", mr) }
                    continue
                }
                if results.contains(where: { $0.0 == n }) { error("the metric '\(n)' is defined twice", mr); continue }
                results.append((n, t))
            }
            metricSink = nil
            if defined == 0 { error("the eval block defines no metric ('name = expression')", r) }
            finishFunction(f, results: results)
            evals.append(.symbol(f.name))
        }
        if !evals.isEmpty { module.recipe["evals"] = .list(evals) }
    }

    func describeValue(_ v: SVal) -> String {
        if case .tensor(let t) = v, let b = builder { return b.function.type(of: t).description }
        return v.kindName
    }

    /// A data source: a builtin dataset, or calls of generator functions that build the data from the seed.
    private func dataSource(_ value: Expr, _ scope: Scope) -> SVal {
        if case .call(let callee, _) = value.kind, case .name(let n) = callee.kind, Builtins.datasets[n] != nil || n == "shakespeare" {
            guard case .dataset(var d) = evalCompileTime(value, scope: scope) else { return .error }
            d.name = "data"
            module.entries.append(Entry(kind: .data, name: "data", type: d.source, attrs: d.attrs))
            return .dataset(d)
        }
        // Generators: `data = make(4096)` (train only) or `data = (train = make(4096), test = make(1024))`.
        var generators: [(String, Expr)] = []
        if case .record(let fields) = value.kind, fields.allSatisfy({ ["train", "test", "valid"].contains($0.0) }) {
            generators = fields
        } else {
            generators = [("train", value)]
        }
        var splits: [String: [(String, TensorType)]] = [:]
        var attrs: [String: Attr] = [:]
        for (split, e) in generators {
            let f = Function(name: "data.\(split)", kind: .data)
            let s = startFunction(f, training: false, batch: nil, fields: [], scope: scope)
            let v = eval(e, s)
            var isRecord = false
            if case .record(let fields) = v {
                isRecord = true
                if fields.allSatisfy({ if case .record = $0.1 { return true }; return false }) {
                    error("data splits are named train, test or valid; found \(fields.map { "'\($0.0)'" }.joined(separator: ", "))", e.range)
                    builder = nil
                    return .error
                }
            }
            let results = flattenResults(v, at: e.range)
            guard isRecord, !results.isEmpty, !containsError(v) else {
                if !containsError(v) { error("a data generator must return a record of tensors such as (x = ..., y = ...), found \(v.kindName == "a tensor" ? "a tensor " + describeValue(v) : v.kindName)", e.range) }
                builder = nil
                return .error
            }
            var fields: [(String, TensorType)] = []
            var count: Dim?
            for (n, r) in results {
                let t = f.type(of: r)
                guard t.rank >= 1 else { error("the data field '\(n)' must have a leading example axis, found \(t)", e.range); builder = nil; return .error }
                if count == nil { count = t.shape[0] } else if count != t.shape[0] {
                    error("the data fields disagree on the number of examples: \(count!) and \(t.shape[0])", e.range)
                    builder = nil
                    return .error
                }
                fields.append((n, TensorType(t.dtype, [Dim(symbol: "B")] + t.shape.dropFirst())))
            }
            finishFunction(f, results: results)
            splits[split] = fields
            attrs[split] = .symbol(f.name)
        }
        guard splits["train"] != nil else { error("the data needs a 'train' split", value.range); return .error }
        module.entries.append(Entry(kind: .data, name: "data", type: "generator", attrs: attrs))
        return .dataset(Dataset(name: "data", source: "generator", attrs: attrs, splits: splits))
    }

    private func containsError(_ v: SVal) -> Bool {
        switch v {
        case .error: return true
        case .tuple(let xs), .list(let xs): return xs.contains(where: containsError)
        case .record(let fs): return fs.contains { containsError($0.1) }
        default: return false
        }
    }

    private func countMinimize(_ block: CodeBlock) -> Int {
        var n = 0
        for s in block.statements {
            switch s {
            case .minimize: n += 1
            case .conditional(_, let t, let o, _): n += countMinimize(t) + (o.map(countMinimize) ?? 0)
            case .forLoop(_, _, let b, let r):
                if countMinimize(b) > 0 { error("'minimize' cannot appear inside a 'for' loop; write one 'minimize' per update", r) }
            default: break
            }
        }
        return n
    }

    /// Starts a function whose batch arguments are `batch.<field>`; returns the scope of its body.
    private func startFunction(_ f: Function, training: Bool, batch: String?, fields: [(String, TensorType)], scope: Scope) -> Scope {
        builder = FunctionBuilder(function: f, training: training)
        let s = Scope(parent: scope)
        if let batch {
            var record: [(String, SVal)] = []
            for (n, t) in fields {
                let v = f.newValue(t, name: "\(batch).\(n)")
                f.body.arguments.append(v)
                record.append((n, .tensor(v)))
            }
            if !fields.isEmpty {
                // The batch's symbolic sizes (B, and N, E for graphs) are usable by name.
                for (_, t) in fields { for d in t.shape { for sym in d.symbols where s.values[sym] == nil { s.values[sym] = .dim(Dim(symbol: sym)) } } }
                s.values[batch] = .record(record)
            }
        }
        return s
    }

    private func finishFunction(_ f: Function, results: [(String, Value)]) {
        f.resultTypes = results.map { f.type(of: $0.1) }
        f.resultNames = results.map(\.0)
        builder!.finish(results: results.map(\.1))
        builder = nil
        module.functions.append(f)
    }

    /// The tensors of a value as named function results.
    func flattenResults(_ v: SVal, at range: SourceRange) -> [(String, Value)] {
        switch v {
        case .tensor(let t): return [("", t)]
        case .int, .float, .bool: return toTensor(v, dtype: nil, at: range).map { [("", $0)] } ?? []
        case .tuple(let xs):
            var out: [(String, Value)] = []
            for x in xs { out += flattenResults(x, at: range) }
            return out
        case .record(let fields):
            var out: [(String, Value)] = []
            for (n, x) in fields { out += flattenResults(x, at: range).map { ($0.0.isEmpty ? n : "\(n).\($0.0)", $0.1) } }
            return out
        default: return []
        }
    }

    func minimize(_ optExpr: Expr, _ lossExpr: Expr, _ scope: Scope, at range: SourceRange) {
        guard let b = builder, b.function.kind == .step, inStepBody else {
            error("'minimize' is only allowed in the train recipe's step", range)
            return
        }
        let k = minimizeSeen
        minimizeSeen += 1
        guard k == minimizeTarget else { return }
        let o = eval(optExpr, scope)
        guard case .optimizer(let name) = o else {
            if !o.isError { error("'minimize' needs an optimizer declared in the recipe, found \(o.kindName)", optExpr.range) }
            return
        }
        let loss = eval(lossExpr, scope)
        if loss.isError { return }
        guard let t = toTensor(loss, dtype: .f32, at: lossExpr.range), b.function.type(of: t) == TensorType(.f32, []) else {
            error("the loss must be a scalar f32[], found \(describeValue(loss)); reduce it with mean(...) or sum(...)", lossExpr.range)
            return
        }
        if b.inLoop { error("'minimize' cannot appear inside a run-time loop", range); return }
        b.append(Operation(op: .minimize, operands: [t], results: [], attrs: ["optimizer": .symbol(name)], location: range))
        stepLoss = t
    }

    /// A procedure: a command of the generated binary (sampling, generation, evaluation).
    func buildProc(_ fn: FnDecl) {
        let f = Function(name: fn.name, kind: .proc)
        builder = FunctionBuilder(function: f, training: false)
        let scope = Scope(parent: globalsScope)
        var ok = true
        for p in fn.params {
            if let t = p.type, DType(rawValue: t.name) != nil {
                // Tensor parameters are inputs of the command; unknown size names become symbolic.
                var dims: [Dim] = []
                for d in t.dims ?? [] {
                    guard case .expr(let e) = d else { error("procedure inputs need explicit sizes", t.range); ok = false; break }
                    if case .name(let n) = e.kind, scope.lookup(n) == nil {
                        scope.values[n] = .dim(Dim(symbol: n))
                    }
                    guard let dim = dimValue(eval(e, scope), at: e.range) else { ok = false; break }
                    dims.append(dim)
                }
                let v = f.newValue(TensorType(DType(rawValue: t.name)!, dims), name: p.name)
                f.body.arguments.append(v)
                scope.values[p.name] = .tensor(v)
            } else if let d = p.defaultValue {
                scope.values[p.name] = eval(d, scope)
                if let t = p.type, let checked = check(scope.values[p.name]!, against: t, scope: scope, what: "parameter '\(p.name)'", at: p.range) {
                    scope.values[p.name] = checked
                }
            } else {
                error("the procedure parameter '\(p.name)' needs a tensor type or a default value", p.range)
                ok = false
            }
        }
        guard ok else { builder = nil; return }
        var result = execBlock(fn.body, Scope(parent: scope), owner: nil)
        if let rt = fn.result, !result.isError {
            result = check(result, against: rt, scope: scope, what: "the result of '\(fn.name)'", at: resultRange(fn.body)) ?? .error
        }
        let results = flattenResults(result, at: fn.range)
        finishFunction(f, results: results.enumerated().map { ($0.element.0.isEmpty && results.count == 1 ? "" : $0.element.0, $0.element.1) })
    }
}
