import Foundation

/// Call arguments of a builtin, bound to its parameter list.
struct Arguments {
    let args: [Argument]
    let values: [SVal]
    let range: SourceRange
    unowned let elaborator: Elaborator

    /// Binds to `params` (a trailing `?` marks an optional parameter); nil after reporting an error.
    func bind(_ name: String, _ params: [String]) -> [String: SVal]? {
        var out: [String: SVal] = [:]
        var ranges: [String: SourceRange] = [:]
        let names = params.map { $0.hasSuffix("?") ? String($0.dropLast()) : $0 }
        var next = 0
        for (a, v) in zip(args, values) {
            let key: String
            if let l = a.label {
                guard names.contains(l) else {
                    elaborator.error("'\(name)' has no parameter '\(l)' (it takes \(names.joined(separator: ", ")))\(suggestion(for: l, among: names))", a.range)
                    return nil
                }
                key = l
            } else {
                guard next < names.count else {
                    elaborator.error("'\(name)' takes at most \(names.count) argument\(names.count == 1 ? "" : "s") (\(names.joined(separator: ", "))), got \(args.count)", a.range)
                    return nil
                }
                key = names[next]
                next += 1
            }
            if out[key] != nil { elaborator.error("argument '\(key)' is given twice", a.range); return nil }
            out[key] = v
            ranges[key] = a.range
        }
        for (p, n) in zip(params, names) where !p.hasSuffix("?") && out[n] == nil {
            elaborator.error("missing argument '\(n)' in call to '\(name)'", range)
            return nil
        }
        return out
    }

    func rangeOf(_ name: String, _ params: [String]) -> SourceRange {
        let names = params.map { $0.hasSuffix("?") ? String($0.dropLast()) : $0 }
        if let a = args.first(where: { $0.label == name }) { return a.range }
        if let i = names.firstIndex(of: name), i < args.count, args[i].label == nil { return args[i].range }
        return range
    }
}

/// The builtin functions of the language: the primitive ops, initializers, data sources and optimizers.
enum Builtins {
    typealias Handler = (Elaborator, [String: SVal], Arguments) -> SVal
    struct Builtin { let params: [String]; let run: Handler }

    static let unaryMath: [String: (OpKind, (Double) -> Double)] = [
        "exp": (.exp, Foundation.exp), "log": (.log, Foundation.log), "sqrt": (.sqrt, Foundation.sqrt), "rsqrt": (.rsqrt, { 1 / Foundation.sqrt($0) }),
        "tanh": (.tanh, Foundation.tanh), "sigmoid": (.sigmoid, { 1 / (1 + Foundation.exp(-$0)) }), "relu": (.relu, { Swift.max($0, 0) }),
        "gelu": (.gelu, { 0.5 * $0 * (1 + Foundation.erf($0 / 2.0.squareRoot())) }), "silu": (.silu, { $0 / (1 + Foundation.exp(-$0)) }),
        "softplus": (.softplus, { Foundation.log1p(Foundation.exp(-Swift.abs($0))) + Swift.max($0, 0) }),
        "sin": (.sin, Foundation.sin), "cos": (.cos, Foundation.cos), "erf": (.erf, Foundation.erf), "abs": (.abs, Swift.abs),
        "floor": (.floor, Foundation.floor), "sign": (.sign, { $0 > 0 ? 1 : $0 < 0 ? -1 : 0 }),
    ]

    static let datasets: [String: [String: [(String, TensorType)]]] = [
        "mnist": ["train": [("x", TensorType(.f32, [Dim(symbol: "B"), 784])), ("y", TensorType(.i32, [Dim(symbol: "B")]))],
                  "test": [("x", TensorType(.f32, [Dim(symbol: "B"), 784])), ("y", TensorType(.i32, [Dim(symbol: "B")]))]],
        "fashion_mnist": ["train": [("x", TensorType(.f32, [Dim(symbol: "B"), 784])), ("y", TensorType(.i32, [Dim(symbol: "B")]))],
                          "test": [("x", TensorType(.f32, [Dim(symbol: "B"), 784])), ("y", TensorType(.i32, [Dim(symbol: "B")]))]],
        "digits": ["train": [("x", TensorType(.f32, [Dim(symbol: "B"), 64])), ("y", TensorType(.i32, [Dim(symbol: "B")]))],
                   "test": [("x", TensorType(.f32, [Dim(symbol: "B"), 64])), ("y", TensorType(.i32, [Dim(symbol: "B")]))]],
        "mutag": ["train": graphFields, "test": graphFields],
        "mnist_graphs": ["train": mnistGraphFields, "test": mnistGraphFields],
    ]
    /// A batch of B graphs with N nodes and E directed edges in total.
    static let graphFields: [(String, TensorType)] = [
        ("x", TensorType(.f32, [Dim(symbol: "N"), 7])), ("src", TensorType(.i32, [Dim(symbol: "E")])), ("dst", TensorType(.i32, [Dim(symbol: "E")])),
        ("graph", TensorType(.i32, [Dim(symbol: "N")])), ("y", TensorType(.i32, [Dim(symbol: "B")])),
    ]
    /// MNIST as graphs: one node per pixel (intensity, row, column), edges to the 4 grid neighbours.
    static let mnistGraphFields: [(String, TensorType)] = [
        ("x", TensorType(.f32, [Dim(symbol: "N"), 3])), ("src", TensorType(.i32, [Dim(symbol: "E")])), ("dst", TensorType(.i32, [Dim(symbol: "E")])),
        ("graph", TensorType(.i32, [Dim(symbol: "N")])), ("y", TensorType(.i32, [Dim(symbol: "B")])),
    ]

    static let optimizers: [String: [String]] = [
        "sgd": ["lr", "momentum", "nesterov", "weight_decay"],
        "adam": ["lr", "beta1", "beta2", "eps", "weight_decay"],
        "adamw": ["lr", "beta1", "beta2", "eps", "weight_decay"],
        "rmsprop": ["lr", "alpha", "eps", "momentum", "weight_decay"],
        "adagrad": ["lr", "eps", "weight_decay"],
    ]
    static let optimizerCommon = ["clip_norm", "schedule", "frozen"]
    static let schedules: [String: [String]] = [
        "constant_lr": [], "step_lr": ["every", "gamma"], "cosine_lr": ["warmup?", "min_lr?"], "onecycle_lr": ["max_lr", "pct_start?"],
    ]

    static let table: [String: Builtin] = {
        var t: [String: Builtin] = [:]
        for (name, (op, f)) in unaryMath {
            t[name] = Builtin(params: ["x"]) { e, a, args in
                switch a["x"]! {
                case .int(let i): return .float(f(Double(i)))
                case .float(let x): return .float(f(x))
                default: return e.tensorOp(op, [a["x"]!], args)
                }
            }
        }
        for (name, op) in [("maximum", OpKind.max), ("minimum", .min), ("pow", .pow)] {
            t[name] = Builtin(params: ["a", "b"]) { e, a, args in
                if let x = e.number(a["a"]!), let y = e.number(a["b"]!) {
                    return .float(op == .max ? Swift.max(x, y) : op == .min ? Swift.min(x, y) : Foundation.pow(x, y))
                }
                return e.tensorOp(op, [a["a"]!, a["b"]!], args)
            }
        }
        t["where"] = Builtin(params: ["cond", "a", "b"]) { e, a, args in e.whereOp(a, args) }
        for (name, dt) in [("f32", DType.f32), ("i32", .i32), ("bool", .bool)] {
            t[name] = Builtin(params: ["x"]) { e, a, args in
                guard let v = e.toTensor(a["x"]!, dtype: nil, at: args.range) else { e.error("\(name)(...) converts a tensor, found \(a["x"]!.kindName)", args.range); return .error }
                if e.builder!.function.type(of: v).dtype == dt { return .tensor(v) }
                return e.emit(.cast, [v], ["dtype": .dtype(dt)], at: args.range)
            }
        }
        t["float"] = Builtin(params: ["x"]) { e, a, args in
            if let x = e.number(a["x"]!) { return .float(x) }
            e.error("float(...) converts a compile-time number; use f32(...) for tensors", args.range)
            return .error
        }
        t["int"] = Builtin(params: ["x"]) { e, a, args in
            if let x = e.number(a["x"]!) {
                guard x.isFinite, x.magnitude < 0x1p62 else { e.error("int(...) of \(x) is out of range", args.range); return .error }
                return .int(Int(x))
            }
            e.error("int(...) converts a compile-time number; use i32(...) for tensors", args.range)
            return .error
        }
        t["len"] = Builtin(params: ["x"]) { e, a, args in
            switch a["x"]! {
            case .list(let xs), .tuple(let xs): return .int(xs.count)
            default: e.error("len(...) needs a list, found \(a["x"]!.kindName)", args.range); return .error
            }
        }
        t["reversed"] = Builtin(params: ["x"]) { e, a, args in
            switch a["x"]! {
            case .range(let lo, let hi, let r): return .range(lo, hi, reversed: !r)
            case .list(let xs): return .list(xs.reversed())
            default: e.error("reversed(...) needs a range or a list, found \(a["x"]!.kindName)", args.range); return .error
            }
        }
        for (name, op) in [("sum", OpKind.sum), ("mean", .mean), ("max", .reduce_max), ("min", .reduce_min), ("logsumexp", .logsumexp)] {
            t[name] = Builtin(params: ["x", "axis?", "keepdims?"]) { e, a, args in e.reduce(op, a, args) }
        }
        t["argmax"] = Builtin(params: ["x", "axis?", "keepdims?"]) { e, a, args in e.reduce(.argmax, a, args) }
        t["argmin"] = Builtin(params: ["x", "axis?", "keepdims?"]) { e, a, args in
            var negated = a
            negated["x"] = e.unary("-", a["x"]!, args.range)
            return e.reduce(.argmax, negated, args)
        }
        t["cumsum"] = Builtin(params: ["x", "axis?"]) { e, a, args in
            guard let x = e.tensorArg(a["x"]!, args) else { return .error }
            return e.emit(.cumsum, [x], ["axis": .int(e.intOr(a["axis"], -1))], at: args.range)
        }
        t["softmax"] = Builtin(params: ["x", "axis?"]) { e, a, args in
            guard let x = e.tensorArg(a["x"]!, args) else { return .error }
            return e.emit(.softmax, [x], ["axis": .int(e.intOr(a["axis"], -1))], at: args.range)
        }
        t["normalize"] = Builtin(params: ["x", "axis?", "eps?"]) { e, a, args in
            guard let x = e.tensorArg(a["x"]!, args) else { return .error }
            let eps = a["eps"].map { e.number($0) } ?? 1e-5
            guard let eps, eps >= 0 else { e.error("normalize's eps must be a non-negative number", args.range); return .error }
            return e.emit(.normalize, [x], ["axis": .int(e.intOr(a["axis"], -1)), "eps": .float(eps)], at: args.range)
        }
        t["clip"] = Builtin(params: ["x", "low", "high"]) { e, a, args in
            let lowered = e.tensorOp(.max, [a["x"]!, a["low"]!], args)
            return e.tensorOp(.min, [lowered, a["high"]!], args)
        }
        t["log1p"] = Builtin(params: ["x"]) { e, a, args in
            if let x = e.number(a["x"]!) { return .float(Foundation.log1p(x)) }
            return e.tensorOp(.log, [e.binary("+", a["x"]!, .float(1), args.range)], args)
        }
        t["reshape"] = Builtin(params: ["x", "shape"]) { e, a, args in e.reshape(a, args) }
        t["transpose"] = Builtin(params: ["x", "perm"]) { e, a, args in
            guard let x = e.tensorArg(a["x"]!, args), let perm = e.intList(a["perm"]!, args) else { return .error }
            let rank = e.builder!.function.type(of: x).rank
            return e.emit(.transpose, [x], ["perm": .ints(perm.map { $0 < 0 ? $0 + rank : $0 })], at: args.range)
        }
        t["swapaxes"] = Builtin(params: ["x", "a", "b"]) { e, a, args in
            guard let x = e.tensorArg(a["x"]!, args), case .int(var i) = a["a"]!, case .int(var j) = a["b"]! else { e.error("swapaxes(x, a, b) needs a tensor and two integer axes", args.range); return .error }
            let rank = e.builder!.function.type(of: x).rank
            if i < 0 { i += rank }
            if j < 0 { j += rank }
            guard i >= 0, i < rank, j >= 0, j < rank else { e.error("swapaxes: axes out of range for rank \(rank)", args.range); return .error }
            var perm = Array(0..<rank)
            perm.swapAt(i, j)
            return e.emit(.transpose, [x], ["perm": .ints(perm)], at: args.range)
        }
        t["broadcast_to"] = Builtin(params: ["x", "shape"]) { e, a, args in
            guard let x = e.tensorArg(a["x"]!, args), let shape = e.shapeArg(a["shape"]!, args) else { return .error }
            return e.emit(.broadcast, [x], ["shape": .dims(shape)], at: args.range)
        }
        t["concat"] = Builtin(params: ["xs", "axis?"]) { e, a, args in
            guard case .list(let xs) = a["xs"]! else { e.error("concat needs a list of tensors", args.range); return .error }
            let vs = xs.compactMap { e.toTensor($0, dtype: nil, at: args.range) }
            guard vs.count == xs.count, !vs.isEmpty else { e.error("concat needs a non-empty list of tensors", args.range); return .error }
            return e.emit(.concat, vs, ["axis": .int(e.intOr(a["axis"], 0))], at: args.range)
        }
        t["stack"] = Builtin(params: ["xs", "axis?"]) { e, a, args in e.stack(a, args) }
        t["unsqueeze"] = Builtin(params: ["x", "axis"]) { e, a, args in
            guard let x = e.tensorArg(a["x"]!, args), case .int(var ax) = a["axis"]! else { return .error }
            var shape = e.builder!.function.type(of: x).shape
            if ax < 0 { ax += shape.count + 1 }
            guard ax >= 0 && ax <= shape.count else { e.error("unsqueeze: axis out of range", args.range); return .error }
            shape.insert(1, at: ax)
            return e.emit(.reshape, [x], ["shape": .dims(shape)], at: args.range)
        }
        t["squeeze"] = Builtin(params: ["x", "axis"]) { e, a, args in
            guard let x = e.tensorArg(a["x"]!, args), case .int(var ax) = a["axis"]! else { return .error }
            var shape = e.builder!.function.type(of: x).shape
            if ax < 0 { ax += shape.count }
            guard ax >= 0 && ax < shape.count, shape[ax] == 1 else { e.error("squeeze: axis \(ax) of \(e.builder!.function.type(of: x)) is not of size 1", args.range); return .error }
            shape.remove(at: ax)
            return e.emit(.reshape, [x], ["shape": .dims(shape)], at: args.range)
        }
        t["flatten"] = Builtin(params: ["x", "start?"]) { e, a, args in
            guard let x = e.tensorArg(a["x"]!, args) else { return .error }
            let shape = e.builder!.function.type(of: x).shape
            var s = e.intOr(a["start"], 1)
            if s < 0 { s += shape.count }
            guard s >= 0 && s < shape.count else { e.error("flatten: start axis out of range", args.range); return .error }
            return e.emit(.reshape, [x], ["shape": .dims(Array(shape[..<s]) + [shape[s...].reduce(Dim(1), *)])], at: args.range)
        }
        t["pad"] = Builtin(params: ["x", "widths", "value?"]) { e, a, args in e.pad(a, args) }
        t["take"] = Builtin(params: ["x", "idx", "axis?"]) { e, a, args in
            guard let x = e.tensorArg(a["x"]!, args), let i = e.toTensor(a["idx"]!, dtype: .i32, at: args.range) else { return .error }
            return e.emit(.take, [x, i], ["axis": .int(e.intOr(a["axis"], 0))], at: args.range)
        }
        t["scatter_add"] = Builtin(params: ["src", "idx", "size", "axis?"]) { e, a, args in
            guard let x = e.tensorArg(a["src"]!, args), let i = e.tensorArg(a["idx"]!, args), let size = e.dimValue(a["size"]!, at: args.range) else { return .error }
            return e.emit(.scatter_add, [x, i], ["axis": .int(e.intOr(a["axis"], 0)), "size": size.constant.map(Attr.int) ?? .dim(size)], at: args.range)
        }
        t["update"] = Builtin(params: ["buf", "index", "value", "axis?"]) { e, a, args in
            guard let b = e.tensorArg(a["buf"]!, args), let i = e.toTensor(a["index"]!, dtype: .i32, at: args.range),
                  let v = e.toTensor(a["value"]!, dtype: e.builder!.function.type(of: b).dtype, at: args.range) else { return .error }
            return e.emit(.update_slice, [b, v, i], ["axis": .int(e.intOr(a["axis"], 0))], at: args.range)
        }
        t["one_hot"] = Builtin(params: ["idx", "depth"]) { e, a, args in
            guard let i = e.tensorArg(a["idx"]!, args), case .int(let d) = a["depth"]!, d >= 1 else { e.error("one_hot(idx, depth) needs an i32 tensor and a positive integer depth", args.range); return .error }
            return e.emit(.one_hot, [i], ["depth": .int(d)], at: args.range)
        }
        t["matmul"] = Builtin(params: ["a", "b"]) { e, a, args in e.matmul(a["a"]!, a["b"]!, args.range) }
        t["conv2d"] = Builtin(params: ["x", "w", "stride?", "padding?", "dilation?"]) { e, a, args in
            guard let x = e.tensorArg(a["x"]!, args), let w = e.tensorArg(a["w"]!, args) else { return .error }
            return e.emit(.conv2d, [x, w], ["stride": .ints(e.pair(a["stride"], 1, "stride", at: args.range)), "padding": .ints(e.pair(a["padding"], 0, "padding", at: args.range)), "dilation": .ints(e.pair(a["dilation"], 1, "dilation", at: args.range))], at: args.range)
        }
        t["conv2d_transpose"] = Builtin(params: ["x", "w", "stride?", "padding?", "output_padding?"]) { e, a, args in
            guard let x = e.tensorArg(a["x"]!, args), let w = e.tensorArg(a["w"]!, args) else { return .error }
            return e.emit(.conv2d_transpose, [x, w], ["stride": .ints(e.pair(a["stride"], 1, "stride", at: args.range)), "padding": .ints(e.pair(a["padding"], 0, "padding", at: args.range)), "output_padding": .ints(e.pair(a["output_padding"], 0, "output_padding", at: args.range))], at: args.range)
        }
        for (name, op) in [("max_pool2d", OpKind.maxpool2d), ("avg_pool2d", .avgpool2d)] {
            t[name] = Builtin(params: ["x", "kernel", "stride?", "padding?"]) { e, a, args in
                guard let x = e.tensorArg(a["x"]!, args) else { return .error }
                let k = e.pair(a["kernel"], 2, "kernel", at: args.range)
                return e.emit(op, [x], ["kernel": .ints(k), "stride": .ints(a["stride"] == nil ? k : e.pair(a["stride"], 1, "stride", at: args.range)), "padding": .ints(e.pair(a["padding"], 0, "padding", at: args.range))], at: args.range)
            }
        }
        t["stop_gradient"] = Builtin(params: ["x"]) { e, a, args in e.tensorOp(.stop_gradient, [a["x"]!], args) }
        // Random numbers in functions; initializers in `param` declarations.
        t["normal"] = Builtin(params: ["shape?", "mean?", "std?"]) { e, a, args in e.random(.random_normal, a, args) }
        t["uniform"] = Builtin(params: ["shape?", "low?", "high?"]) { e, a, args in e.random(.random_uniform, a, args) }
        t["randint"] = Builtin(params: ["shape", "low", "high"]) { e, a, args in e.random(.random_randint, a, args) }
        t["bernoulli"] = Builtin(params: ["p"]) { e, a, args in
            guard let p = e.toTensor(a["p"]!, dtype: .f32, at: args.range) else { e.error("bernoulli(p) needs f32 probabilities", args.range); return .error }
            return e.emit(.random_bernoulli, [e.builder!.key(), p], ["stream": .int(e.nextStream())], at: args.range)
        }
        t["categorical"] = Builtin(params: ["logits"]) { e, a, args in
            guard let l = e.tensorArg(a["logits"]!, args) else { return .error }
            return e.emit(.random_categorical, [e.builder!.key(), l], ["stream": .int(e.nextStream())], at: args.range)
        }
        t["zeros"] = Builtin(params: ["shape", "dtype?"]) { e, a, args in e.fill(0, a, args) }
        t["ones"] = Builtin(params: ["shape", "dtype?"]) { e, a, args in e.fill(1, a, args) }
        t["full"] = Builtin(params: ["shape", "value?", "dtype?"]) { e, a, args in
            if e.builder == nil, a["value"] == nil, let v = e.number(a["shape"]!) { return .config("full", ["value": .float(v)]) }
            guard let v = a["value"].flatMap(e.number) else { e.error("full(shape, value) needs a number value", args.range); return .error }
            return e.fill(v, a, args)
        }
        t["arange"] = Builtin(params: ["n"]) { e, a, args in
            guard let n = e.dimValue(a["n"]!, at: args.range) else { return .error }
            if let c = n.constant, c < 0 { e.error("arange needs a non-negative count, got \(c)", args.range); return .error }
            return e.emit(.iota, [], ["shape": .dims([n]), "axis": .int(0)], at: args.range)
        }
        for (name, _) in datasets {
            t[name] = Builtin(params: ["path"]) { e, a, args in e.dataset(name, a, args) }
        }
        t["shakespeare"] = Builtin(params: ["path", "context"]) { e, a, args in e.dataset("shakespeare", a, args) }
        for (name, hyper) in optimizers {
            t[name] = Builtin(params: ["params"] + (hyper + optimizerCommon).map { $0 + "?" }) { e, a, args in e.optimizer(name, a, args) }
        }
        for (name, ps) in schedules {
            t[name] = Builtin(params: ps) { e, a, args in
                var attrs: [String: Attr] = [:]
                for (k, v) in a {
                    guard let x = e.number(v) else { e.error("'\(k)' of \(name) must be a number", args.range); return .error }
                    attrs[k] = .float(x)
                }
                return .config(name, attrs)
            }
        }
        return t
    }()

    static let names: Set<String> = Set(table.keys)

    static func call(_ name: String, _ e: Elaborator, _ args: Arguments) -> SVal {
        guard let b = table[name], let bound = args.bind(name, b.params) else { return .error }
        return b.run(e, bound, args)
    }
}
