/// Helpers behind the builtin table: argument conversion and the composite builtins.
extension Elaborator {
    func tensorArg(_ v: SVal, _ args: Arguments) -> Value? {
        if case .tensor(let t) = v { return t }
        if case .list = v, builder != nil, let t = toTensor(v, dtype: nil, at: args.range) { return t }
        if !v.isError { error("expected a tensor, found \(v.kindName)", args.range) }
        return nil
    }

    func tensorOp(_ op: OpKind, _ values: [SVal], _ args: Arguments) -> SVal {
        if values.contains(where: \.isError) { return .error }
        let hint = values.lazy.compactMap(dtypeOf).first
        var operands: [Value] = []
        for v in values {
            guard let t = toTensor(v, dtype: hint, at: args.range) else {
                error("'\(op.name)' needs tensors, found \(v.kindName)", args.range)
                return .error
            }
            operands.append(t)
        }
        return emit(op, operands, [:], at: args.range)
    }

    func whereOp(_ a: [String: SVal], _ args: Arguments) -> SVal {
        guard let c = toTensor(a["cond"]!, dtype: .bool, at: args.range) else { error("the condition of 'where' must be a bool tensor", args.range); return .error }
        let hint = dtypeOf(a["a"]!) ?? dtypeOf(a["b"]!) ?? .f32
        guard let x = toTensor(a["a"]!, dtype: hint, at: args.range), let y = toTensor(a["b"]!, dtype: hint, at: args.range) else {
            error("the branches of 'where' must be tensors or numbers", args.range)
            return .error
        }
        return emit(.select, [c, x, y], [:], at: args.range)
    }

    func intOr(_ v: SVal?, _ def: Int) -> Int {
        if case .int(let i)? = v { return i }
        return def
    }

    func intList(_ v: SVal, _ args: Arguments) -> [Int]? {
        switch v {
        case .int(let i): return [i]
        case .list(let xs), .tuple(let xs):
            var out: [Int] = []
            for x in xs {
                guard case .int(let i) = x else { error("expected a list of integers", args.range); return nil }
                out.append(i)
            }
            return out
        case .error: return nil
        default:
            error("expected a list of integers, found \(v.kindName)", args.range)
            return nil
        }
    }

    /// A shape given as a list of sizes, a tensor type, or an integer.
    func shapeArg(_ v: SVal, _ args: Arguments) -> [Dim]? {
        switch v {
        case .list(let xs), .tuple(let xs):
            var out: [Dim] = []
            for x in xs {
                guard let d = dimValue(x, at: args.range) else { return nil }
                guard d.constant.map({ $0 >= 0 }) ?? true else { error("a shape cannot have negative sizes", args.range); return nil }
                guard d.constant.map({ $0 < 1 << 31 }) ?? true else { error("size \(d) is too large", args.range); return nil }
                out.append(d)
            }
            return out
        case .tensorType(let t): return t.shape
        case .int, .dim: return dimValue(v, at: args.range).map { [$0] }
        case .error: return nil
        default:
            error("expected a shape (a list of sizes), found \(v.kindName)", args.range)
            return nil
        }
    }

    /// An integer or a pair of integers, as a pair; anything else is reported and replaced by the default.
    func pair(_ v: SVal?, _ def: Int, _ what: String = "size", at range: SourceRange? = nil) -> [Int] {
        switch v {
        case nil: return [def, def]
        case .int(let i)? where i.magnitude < 1 << 31: return [i, i]
        case .list(let xs)?, .tuple(let xs)?:
            let ints = xs.compactMap { x -> Int? in if case .int(let i) = x, i.magnitude < 1 << 31 { return i }; return nil }
            if ints.count == 2 && xs.count == 2 { return ints }
        case .error?: return [def, def]
        default: break
        }
        error("\(what) must be an integer or a pair of integers, found \(v!.kindName)\(v.map { if case .list(let xs) = $0 { return " of \(xs.count)" }; return "" } ?? "")", range ?? .unknown)
        return [def, def]
    }

    func reduce(_ op: OpKind, _ a: [String: SVal], _ args: Arguments) -> SVal {
        guard let x = tensorArg(a["x"]!, args) else { return .error }
        let rank = builder!.function.type(of: x).rank
        var axes: [Int]
        if let ax = a["axis"] {
            switch ax {
            case .float, .tensor:
                error("the second argument of a reduction is its axis; use maximum(a, b) or minimum(a, b) for elementwise extremes", args.range)
                return .error
            default: break
            }
            guard let list = intList(ax, args) else { return .error }
            axes = list
        } else {
            axes = op == .argmax ? [-1] : Array(0..<rank)
        }
        var keep = false
        if let k = a["keepdims"] {
            guard case .bool(let b) = k else { error("keepdims must be true or false", args.range); return .error }
            keep = b
        }
        if op == .argmax {
            guard axes.count == 1 else { error("argmax takes one axis", args.range); return .error }
            return emit(.argmax, [x], ["axis": .int(axes[0]), "keepdims": .bool(keep)], at: args.range)
        }
        return emit(op, [x], ["axes": .ints(axes.map { $0 < 0 ? $0 + rank : $0 }.sorted()), "keepdims": .bool(keep)], at: args.range)
    }

    func reshape(_ a: [String: SVal], _ args: Arguments) -> SVal {
        guard let x = tensorArg(a["x"]!, args) else { return .error }
        guard case .list(let items) = a["shape"]! else { error("reshape needs a list of sizes", args.range); return .error }
        var dims: [Dim?] = []
        for item in items {
            if case .int(-1) = item { dims.append(nil); continue }
            guard let d = dimValue(item, at: args.range) else { return .error }
            dims.append(d)
        }
        let type = builder!.function.type(of: x)
        let unknown = dims.filter { $0 == nil }.count
        if unknown > 1 { error("reshape can infer only one size (-1)", args.range); return .error }
        if unknown == 1 {
            let known = dims.compactMap { $0 }.reduce(Dim(1), *)
            guard let q = type.shape.reduce(Dim(1), *).divided(by: known) else {
                error("cannot reshape \(type): its size is not divisible by \(known)", args.range)
                return .error
            }
            dims = dims.map { $0 ?? q }
        }
        return emit(.reshape, [x], ["shape": .dims(dims.map { $0! })], at: args.range)
    }

    func stack(_ a: [String: SVal], _ args: Arguments) -> SVal {
        guard case .list(let xs) = a["xs"]!, !xs.isEmpty else { error("stack needs a non-empty list of tensors", args.range); return .error }
        var ax = intOr(a["axis"], 0)
        var parts: [Value] = []
        for x in xs {
            guard let t = toTensor(x, dtype: dtypeOf(xs[0]), at: args.range) else { error("stack needs tensors", args.range); return .error }
            var shape = builder!.function.type(of: t).shape
            if ax < 0 { ax += shape.count + 1 }
            guard ax >= 0 && ax <= shape.count else { error("stack: axis out of range", args.range); return .error }
            shape.insert(1, at: ax)
            guard case .tensor(let r) = emit(.reshape, [t], ["shape": .dims(shape)], at: args.range) else { return .error }
            parts.append(r)
        }
        return emit(.concat, parts, ["axis": .int(ax)], at: args.range)
    }

    func pad(_ a: [String: SVal], _ args: Arguments) -> SVal {
        guard let x = tensorArg(a["x"]!, args), case .list(let ws) = a["widths"]! else { error("pad(x, [[before, after], ...]) needs a tensor and a list of pairs", args.range); return .error }
        let rank = builder!.function.type(of: x).rank
        guard ws.count <= rank else { error("pad: \(ws.count) pairs for a tensor of rank \(rank)", args.range); return .error }
        var lo = Array(repeating: 0, count: rank), hi = lo
        for (i, w) in ws.enumerated() {
            let p = pair(w, -1)
            guard p[0] >= 0, p[1] >= 0 else { error("pad widths must be pairs of non-negative integers", args.range); return .error }
            lo[rank - ws.count + i] = p[0]
            hi[rank - ws.count + i] = p[1]
        }
        let value = a["value"].flatMap(number) ?? 0
        let dt = builder!.function.type(of: x).dtype
        return emit(.pad, [x], ["low": .ints(lo), "high": .ints(hi), "value": dt == .f32 ? .float(value) : .int(saturatingInt(value))], at: args.range)
    }

    /// The integer nearest to `v`, limited to the i32 range.
    func saturatingInt(_ v: Double) -> Int {
        guard v.isFinite else { return v > 0 ? Int(Int32.max) : v < 0 ? Int(Int32.min) : 0 }
        return Int(max(Double(Int32.min), min(Double(Int32.max), v.rounded(.towardZero))))
    }

    func nextStream() -> Int {
        streamCounter += 1
        return streamCounter
    }

    func random(_ op: OpKind, _ a: [String: SVal], _ args: Arguments) -> SVal {
        if builder == nil {
            // In a `param` initializer: normal(std, mean) and uniform(low, high).
            if op == .random_normal {
                let std = a["std"].flatMap(number) ?? a["shape"].flatMap(number) ?? 1
                return .config("normal", ["std": .float(std), "mean": .float(a["mean"].flatMap(number) ?? 0)])
            }
            if op == .random_uniform {
                let positional = a["shape"].flatMap(number)
                let low = positional ?? a["low"].flatMap(number) ?? 0
                let high = positional != nil ? (a["low"].flatMap(number) ?? 1) : (a["high"].flatMap(number) ?? 1)
                return .config("uniform", ["low": .float(low), "high": .float(high)])
            }
            error("\(op == .random_randint ? "randint" : "this") cannot initialize a parameter", args.range)
            return .error
        }
        guard let shapeV = a["shape"] else { error("missing argument 'shape'", args.range); return .error }
        guard let shape = shapeArg(shapeV, args) else { return .error }
        let key = builder!.key()
        switch op {
        case .random_normal:
            var v = emit(.random_normal, [key], ["shape": .dims(shape), "stream": .int(nextStream())], at: args.range)
            if let s = a["std"] { v = binary("*", v, s, args.range) }
            if let m = a["mean"] { v = binary("+", v, m, args.range) }
            return v
        case .random_uniform:
            guard let lo = number(a["low"] ?? .float(0)), let hi = number(a["high"] ?? .float(1)) else { error("uniform bounds must be numbers", args.range); return .error }
            return emit(.random_uniform, [key], ["shape": .dims(shape), "stream": .int(nextStream()), "low": .float(lo), "high": .float(hi)], at: args.range)
        default:
            guard case .int(let lo) = a["low"]!, case .int(let hi) = a["high"]!, lo < hi else { error("randint needs integer bounds low < high", args.range); return .error }
            return emit(.random_randint, [key], ["shape": .dims(shape), "stream": .int(nextStream()), "low": .int(lo), "high": .int(hi)], at: args.range)
        }
    }

    func fill(_ value: Double, _ a: [String: SVal], _ args: Arguments) -> SVal {
        guard builder != nil else {
            if inInitializer {
                error("use 'zeros', 'ones', 'full(v)', 'normal(std)' or 'uniform(low, high)' to initialize parameters", args.range)
            } else {
                error("tensor operations can only appear inside functions; a top-level 'let' holds a compile-time value or a layer", args.range)
            }
            return .error
        }
        guard let shape = shapeArg(a["shape"]!, args) else { return .error }
        var dt = DType.f32
        if case .tensorType(let t) = a["shape"]! { dt = t.dtype }
        if case .builtin(let n)? = a["dtype"], let d = DType(rawValue: n) { dt = d }
        let attr: Attr = dt == .f32 ? .float(value) : dt == .i32 ? .int(saturatingInt(value)) : .bool(value != 0)
        guard let c = constant(attr, dt, shape: shape, at: args.range) else { return .error }
        return .tensor(c)
    }

    func dataset(_ name: String, _ a: [String: SVal], _ args: Arguments) -> SVal {
        guard builder == nil, inRecipe else {
            error("data sources such as '\(name)' can only be used in the train recipe", args.range)
            return .error
        }
        guard case .string(let path) = a["path"]! else { error("the data path must be a string", args.range); return .error }
        var attrs: [String: Attr] = ["path": .string(path)]
        var splits = Builtins.datasets[name] ?? [:]
        if name == "shakespeare" {
            guard case .int(let t) = a["context"]!, t >= 1 else { error("the context length must be a positive integer", args.range); return .error }
            attrs["context"] = .int(t)
            let fields = [("x", TensorType(.i32, [Dim(symbol: "B"), Dim(t)])), ("y", TensorType(.i32, [Dim(symbol: "B"), Dim(t)]))]
            splits = ["train": fields, "test": fields]
        }
        return .dataset(Dataset(name: "", source: name, attrs: attrs, splits: splits))
    }

    func optimizer(_ name: String, _ a: [String: SVal], _ args: Arguments) -> SVal {
        guard inRecipe, let entryName = pendingPath else {
            error("optimizers are declared as settings of the train recipe ('optim = \(name)(model, lr = ...)')", args.range)
            return .error
        }
        pendingPath = nil
        let groups = LayerInstance.layers(in: a["params"]!)
        guard !groups.isEmpty else {
            if !a["params"]!.isError { error("the first argument of '\(name)' must be a layer or a list of layers, found \(a["params"]!.kindName)", args.range) }
            return .error
        }
        var frozen = Set<String>()
        if let f = a["frozen"] {
            let layers = LayerInstance.layers(in: f)
            if layers.isEmpty { error("'frozen' must be a layer or a list of layers", args.range) }
            for l in layers { frozen.formUnion(l.allParams) }
        }
        var params: [String] = []
        for g in groups { for p in g.allParams where !frozen.contains(p) && !params.contains(p) { params.append(p) } }
        if params.isEmpty { error("the optimizer '\(entryName)' has no parameters to train", args.range) }
        var attrs: [String: Attr] = ["params": .list(params.map { .symbol($0) })]
        for (k, v) in a where k != "params" && k != "frozen" {
            switch v {
            case .int(let i): attrs[k] = .float(Double(i))
            case .float(let x): attrs[k] = .float(x)
            case .bool(let b): attrs[k] = .bool(b)
            case .config(let s, let sa):
                attrs[k] = .string(s)
                for (sk, sv) in sa { attrs["\(k).\(sk)"] = sv }
            case .error: return .error
            default: error("'\(k)' of \(name) must be a number, found \(v.kindName)", args.rangeOf(k, ["params"] + Builtins.optimizers[name]! + Builtins.optimizerCommon)); return .error
            }
        }
        module.entries.append(Entry(kind: .optimizer, name: entryName, type: name, attrs: attrs))
        return .optimizer(entryName)
    }
}
