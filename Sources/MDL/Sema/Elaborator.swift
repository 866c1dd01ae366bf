/// Semantic analysis: resolves names, instantiates layers, evaluates configuration at
/// compile time, infers dtypes and shapes, and builds Graph IR functions by inlining every
/// call (layers are templates instantiated at their call sites). All errors are reported.
final class Elaborator {
    private(set) var diags: DiagnosticEngine
    let module: Module
    /// The main file's top-level scope (it sees its own declarations and its imports').
    var globalsScope = Scope(parent: nil)
    /// Each file sees its own declarations and those of the files loaded before it (its imports),
    /// never those of the files that import it.
    var fileScopes: [ObjectIdentifier: Scope] = [:]
    /// Functions that were called at least once; the others are checked separately.
    var calledFunctions = Set<ObjectIdentifier>()
    var instances: [LayerInstance] = []
    var builder: FunctionBuilder?
    var streamCounter = 0
    var callDepth = 0
    var instancePaths = Set<String>()
    /// Name given to the next layer constructed (set while evaluating a member or top-level binding).
    var pendingPath: String?
    /// Collects `name = value` metric definitions while elaborating an eval block.
    var metricSink: [(String, SVal, SourceRange)]?
    /// True while evaluating the settings of the train recipe.
    var inRecipe = false
    /// Which `minimize` of a step body is being compiled (each becomes its own step function).
    var minimizeTarget = 0
    var minimizeSeen = 0
    var stepLoss: Value?
    /// True while the statements of the step block itself run (not functions it calls).
    var inStepBody = false
    /// True while a `param`/`state` initializer is evaluated.
    var inInitializer = false

    init(moduleName: String, diags: DiagnosticEngine) {
        self.diags = diags
        self.module = Module(name: moduleName)
    }

    func error(_ message: String, _ range: SourceRange) { diags.error(message, at: range) }

    // MARK: top level

    /// Elaborates the files in order (imports first); `main` is the file whose recipe and procs are compiled.
    func run(files: [SourceModule], main: SourceModule) {
        var defined: [String: SourceRange] = [:]
        let scopes = files.map { _ in Scope(parent: nil) }
        for (f, sc) in zip(files, scopes) { fileScopes[ObjectIdentifier(f.file)] = sc }
        globalsScope = fileScopes[ObjectIdentifier(main.file)] ?? globalsScope
        // Which files see a file's names: itself and every file that imports it, transitively.
        var seenBy: [ObjectIdentifier: [Scope]] = [:]
        for (i, f) in files.enumerated() {
            var visible: [ObjectIdentifier] = [ObjectIdentifier(f.file)]
            var queue = f.imports
            while let next = queue.popLast() {
                let id = ObjectIdentifier(next)
                if visible.contains(id) { continue }
                visible.append(id)
                queue += files.first { $0.file === next }?.imports ?? []
            }
            for id in visible { seenBy[id, default: []].append(scopes[i]) }
        }
        func define(_ name: String, _ v: SVal, _ r: SourceRange) {
            if let prev = defined[name], let f = prev.file {
                let (l, c) = f.lineColumn(prev.start)
                error("'\(name)' is already defined at \(f.path):\(l):\(c)", r)
                return
            }
            if Builtins.names.contains(name) {
                error("'\(name)' is a builtin and cannot be redefined", r)
                return
            }
            defined[name] = r
            for sc in r.file.flatMap({ seenBy[ObjectIdentifier($0)] }) ?? [globalsScope] { sc.values[name] = v }
        }
        for file in files {
            for decl in file.decls {
                switch decl {
                case .layer(let l): define(l.name, .layerType(l), l.range)
                case .function(let f): define(f.name, .function(f, nil), f.range)
                default: break
                }
            }
        }
        for file in files {
            for decl in file.decls {
                guard case .constant(let name, let value, let range) = decl else { continue }
                if defined[name] != nil || Builtins.names.contains(name) { define(name, .error, range); continue }
                pendingPath = name
                let v = evalCompileTime(value, scope: scope(of: range))
                pendingPath = nil
                define(name, v, range)
            }
        }
        for decl in main.decls {
            switch decl {
            case .function(let f) where f.isProc: buildProc(f)
            case .train(let items, let range): buildRecipe(items, range: range)
            default: break
            }
        }
        for file in files where file.file !== main.file {
            for decl in file.decls {
                if case .train(_, let r) = decl { error("an imported file cannot have a 'train' block", r) }
            }
        }
        checkUncalledFunctions(main: main)
    }

    /// The top-level scope of the file that contains `range`.
    func scope(of range: SourceRange) -> Scope {
        range.file.flatMap { fileScopes[ObjectIdentifier($0)] } ?? globalsScope
    }

    /// Type-checks the main file's functions and the methods of its layers that nothing called, with
    /// symbolic sizes for their declared shapes, so `check` reports their errors too. Functions with
    /// untyped parameters are generic and are checked where they are used.
    private func checkUncalledFunctions(main: SourceModule) {
        var candidates: [(FnDecl, LayerInstance?)] = []
        for decl in main.decls { if case .function(let f) = decl, !f.isProc { candidates.append((f, nil)) } }
        var seenMethods = Set<ObjectIdentifier>()
        for inst in instances where inst.decl.range.file === main.file {
            for f in inst.decl.methodDecls where seenMethods.insert(ObjectIdentifier(f)).inserted { candidates.append((f, inst)) }
        }
        for (f, inst) in candidates where !calledFunctions.contains(ObjectIdentifier(f)) {
            guard f.params.allSatisfy({ $0.type != nil || $0.defaultValue != nil }) else { continue }
            let scratch = Function(name: "check.\(f.name)", kind: .proc)
            builder = FunctionBuilder(function: scratch, training: true)
            let scope = Scope(parent: inst.flatMap { instanceScopes[ObjectIdentifier($0)] } ?? self.scope(of: f.range))
            var args: [Argument] = [], values: [SVal] = []
            var ok = true
            for p in f.params {
                guard let t = p.type, let dt = DType(rawValue: t.name) else {
                    if p.type != nil && p.defaultValue == nil { ok = false }
                    continue
                }
                var dims: [Dim] = []
                for d in t.dims ?? [] {
                    switch d {
                    case .expr(let e):
                        if case .name(let n) = e.kind, scope.lookup(n) == nil { dims.append(Dim(symbol: n)); continue }
                        guard let v = dimValue(evalCompileTime(e, scope: scope), at: e.range) else { ok = false; break }
                        dims.append(v)
                    case .any: dims.append(Dim(symbol: "_\(dims.count)"))
                    case .rest: break
                    }
                }
                let v = scratch.newValue(TensorType(dt, dims))
                args.append(Argument(label: p.name, value: Expr(.error, p.range), range: p.range))
                values.append(.tensor(v))
            }
            if ok {
                // Sizes are invented here, so only errors that cannot depend on them are reported.
                let real = diags
                let scratchDiags = DiagnosticEngine()
                diags = scratchDiags
                _ = callFunction(f, inst, args: args, values: values, at: f.range)
                diags = real
                for d in scratchDiags.diagnostics where d.severity == .error && Elaborator.sizeIndependent.contains(where: { d.message.contains($0) }) {
                    real.error(d.message, at: d.range)
                }
            }
            builder = nil
        }
    }

    /// Messages of errors that do not depend on tensor sizes.
    static let sizeIndependent = ["unknown name", "has no member", "has no parameter", "takes", "missing argument", "unknown type",
                                  "unknown element type", "cannot assign", "is already defined", "cannot be called", "element types differ",
                                  "needs an f32", "needs a bool", "must be a compile-time", "only allowed", "cannot update state"]

    /// Evaluates an expression that must not create tensors (configuration, layer members).
    func evalCompileTime(_ e: Expr, scope: Scope) -> SVal {
        let saved = builder
        builder = nil
        defer { builder = saved }
        return eval(e, scope)
    }

    // MARK: layers

    func instantiate(_ decl: LayerDecl, args: [Argument], argValues: [SVal], at range: SourceRange) -> SVal {
        guard let path = pendingPath else {
            error("layers must be created as members of a layer or as top-level bindings ('let model = \(decl.name)(...)')", range)
            return .error
        }
        pendingPath = nil
        if !instancePaths.insert(path).inserted {
            error("a layer named '\(path)' already exists", range)
            return .error
        }
        callDepth += 1
        defer { callDepth -= 1 }
        if callDepth > 64 {
            error("layer '\(decl.name)' contains itself (construction nested more than 64 levels)", range)
            return .error
        }
        let inst = LayerInstance(decl: decl, path: path)
        instances.append(inst)
        let scope = Scope(parent: scope(of: decl.range))
        guard bindArguments(decl.params, args: args, values: argValues, into: scope, calleeName: decl.name, at: range) else { return .error }
        instantiateMembers(decl.members, inst, scope)
        return .layer(inst)
    }

    private func instantiateMembers(_ members: [Member], _ inst: LayerInstance, _ scope: Scope) {
        for m in members {
            switch m {
            case .param(let name, let type, let initializer, let range), .state(let name, let type, let initializer, let range):
                let isParam: Bool
                if case .param = m { isParam = true } else { isParam = false }
                guard declareMember(name, inst, range) else { continue }
                guard let t = staticType(type, scope) else { inst.members[name] = .error; scope.values[name] = .error; continue }
                inInitializer = true
                let v = evalCompileTime(initializer, scope: scope)
                inInitializer = false
                var initName = "zeros", attrs: [String: Attr] = [:]
                switch v {
                case .config(let n, let a): initName = n; attrs = a
                case .int(let x): initName = "full"; attrs = ["value": .float(Double(x))]
                case .float(let x): initName = "full"; attrs = ["value": .float(x)]
                case .builtin(let n) where n == "zeros" || n == "ones": initName = n
                case .error: break
                default: error("expected an initializer such as zeros, ones, normal(std) or uniform(low, high), found \(v.kindName)", initializer.range)
                }
                let global = "\(inst.path).\(name)"
                module.globals.append(Global(kind: isParam ? .param : .state, name: global, type: t, initializer: initName, initAttrs: attrs, location: range))
                if isParam { inst.params.append(global) }
                inst.members[name] = .global(global)
                scope.values[name] = .global(global)
            case .field(let name, let value, let range):
                guard declareMember(name, inst, range) else { continue }
                pendingPath = "\(inst.path).\(name)"
                let v = evalCompileTime(value, scope: scope)
                pendingPath = nil
                inst.members[name] = v
                inst.memberOrder.append(name)
                scope.values[name] = v
            case .function(let f):
                if inst.methods[f.name] != nil || inst.members[f.name] != nil {
                    error("'\(f.name)' is already a member of '\(inst.decl.name)'", f.range)
                    continue
                }
                inst.methods[f.name] = f
                scope.values[f.name] = .function(f, inst)
            case .conditional(let cond, let then, let otherwise, _):
                let c = evalCompileTime(cond, scope: scope)
                switch c {
                case .bool(let b): instantiateMembers(b ? then : otherwise, inst, scope)
                case .error: break
                default: error("a member condition must be a compile-time bool, found \(c.kindName)", cond.range)
                }
            }
        }
        // Methods see the constructor arguments and members.
        instanceScopes[ObjectIdentifier(inst)] = scope
    }

    var instanceScopes: [ObjectIdentifier: Scope] = [:]

    private func declareMember(_ name: String, _ inst: LayerInstance, _ range: SourceRange) -> Bool {
        if inst.members[name] != nil {
            error("'\(name)' is already a member of '\(inst.decl.name)'", range)
            return false
        }
        return true
    }

    /// The value of a layer member as seen from code: parameters and state load their global.
    func memberValue(_ inst: LayerInstance, _ name: String, at range: SourceRange) -> SVal? {
        if let f = inst.methods[name] { return .function(f, inst) }
        guard let v = inst.members[name] else { return nil }
        if case .global(let g) = v { return loadGlobal(g, at: range) }
        return v
    }

    func loadGlobal(_ name: String, at range: SourceRange) -> SVal {
        guard let b = builder else {
            error("parameters can only be used inside functions", range)
            return .error
        }
        if let v = b.cachedGlobal(name) { return .tensor(v) }
        guard let g = module.global(name) else { return .error }
        let v = b.function.newValue(g.type)
        b.append(Operation(op: .global, operands: [], results: [v], attrs: ["name": .symbol(name)], location: range))
        b.cacheGlobal(name, v)
        return .tensor(v)
    }

    /// A parameter or state type: every dimension must be a compile-time integer.
    func staticType(_ t: TypeExpr, _ scope: Scope) -> TensorType? {
        guard let dt = DType(rawValue: t.name) else {
            error("unknown element type '\(t.name)'\(suggestion(for: t.name, among: DType.allCases.map(\.rawValue)))", t.range)
            return nil
        }
        var dims: [Dim] = []
        for d in t.dims ?? [] {
            switch d {
            case .expr(let e):
                let v = evalCompileTime(e, scope: scope)
                switch v {
                case .int(let n) where n >= 0 && n < 1 << 31: dims.append(Dim(n))
                case .int(let n) where n >= 1 << 31: error("dimension \(n) is too large", e.range); return nil
                case .int(let n): error("dimension must not be negative, got \(n)", e.range); return nil
                case .error: return nil
                default: error("a parameter dimension must be a compile-time integer, found \(v.kindName)", e.range); return nil
                }
            case .rest, .any:
                error("parameter shapes must be fully specified", t.range)
                return nil
            }
        }
        var count = 1
        for d in dims {
            let (p, overflow) = count.multipliedReportingOverflow(by: d.constant!)
            if overflow || p > 1 << 40 {
                error("\(TensorType(dt, dims)) has too many elements (at most 2^40)", t.range)
                return nil
            }
            count = p
        }
        return TensorType(dt, dims)
    }

    // MARK: calls

    /// Binds call arguments to parameters (positional, then labelled, then defaults) and checks their types.
    func bindArguments(_ params: [ParamDecl], args: [Argument], values: [SVal], into scope: Scope, calleeName: String, at range: SourceRange) -> Bool {
        var bound: [String: SVal] = [:]
        var ok = true
        var positional = 0
        var seenLabel = false
        for (a, v) in zip(args, values) {
            if let label = a.label {
                seenLabel = true
                guard params.contains(where: { $0.name == label }) else {
                    error("'\(calleeName)' has no parameter '\(label)'\(suggestion(for: label, among: params.map(\.name)))", a.range)
                    ok = false
                    continue
                }
                if bound[label] != nil { error("argument '\(label)' is given twice", a.range); ok = false; continue }
                bound[label] = v
            } else {
                if seenLabel { error("positional arguments must come before labelled ones", a.range); ok = false; continue }
                guard positional < params.count else {
                    error("'\(calleeName)' takes \(params.count) argument\(params.count == 1 ? "" : "s") but \(args.count) were given", a.range)
                    ok = false
                    break
                }
                bound[params[positional].name] = v
                positional += 1
            }
        }
        for p in params {
            scope.parameterOf[p.name] = calleeName
            if let v = bound[p.name] {
                scope.values[p.name] = v
            } else if let d = p.defaultValue {
                scope.values[p.name] = eval(d, scope)
            } else {
                error("missing argument '\(p.name)' in call to '\(calleeName)'", range)
                ok = false
                scope.values[p.name] = .error
            }
        }
        guard ok else { return false }
        for p in params {
            guard let t = p.type, let v = scope.values[p.name] else { continue }
            if let converted = check(v, against: t, scope: scope, what: "argument '\(p.name)' of \(quotedCallee(calleeName))", at: argumentRange(p.name, params, args) ?? range) {
                scope.values[p.name] = converted
            } else {
                ok = false
            }
        }
        return ok
    }

    /// `'f'`, or for a method `'model.fc' (Linear.forward)`.
    func quotedCallee(_ name: String) -> String { name.contains(" (") ? name : "'\(name)'" }

    private func argumentRange(_ name: String, _ params: [ParamDecl], _ args: [Argument]) -> SourceRange? {
        if let a = args.first(where: { $0.label == name }) { return a.range }
        if let i = params.firstIndex(where: { $0.name == name }), i < args.count, args[i].label == nil { return args[i].range }
        return nil
    }

    /// Checks a value against a declared type, binding symbolic dimensions in `scope`; returns the (converted) value.
    func check(_ v: SVal, against t: TypeExpr, scope: Scope, what: String, at range: SourceRange) -> SVal? {
        if v.isError { return nil }
        switch t.name {
        case "int":
            if case .int = v { return v }
            if case .dim(let d) = v, let c = d.constant { return .int(c) }
            if case .dim = v { return v }
        case "float":
            if case .float = v { return v }
            if case .int(let i) = v { return .float(Double(i)) }
        case "bool":
            if t.dims == nil, case .bool = v { return v }
        case "string":
            if case .string = v { return v }
        case "layer":
            if case .layer = v { return v }
        case "list":
            if case .list = v { return v }
        case "any":
            return v
        case "tuple":
            guard let elements = t.elements, case .tuple(let xs) = v, xs.count == elements.count else { break }
            var out: [SVal] = []
            for (x, et) in zip(xs, elements) {
                guard let c = check(x, against: et, scope: scope, what: what, at: range) else { return nil }
                out.append(c)
            }
            return .tuple(out)
        default:
            break
        }
        guard let dtype = DType(rawValue: t.name) else {
            if ["int", "float", "bool", "string", "layer", "list", "any", "tuple"].contains(t.name) {
                error("\(what) must be \(t.name == "int" ? "an integer" : t.name == "layer" ? "a layer" : "a \(t.name)"), found \(v.kindName)", range)
            } else {
                error("unknown type '\(t.name)'\(suggestion(for: t.name, among: ["f32", "i32", "bool", "int", "float", "string", "layer", "list"]))", t.range)
            }
            return nil
        }
        guard let value = toTensor(v, dtype: dtype, at: range) else {
            error("\(what) must be a tensor \(typeText(t, scope)), found \(v.kindName == "a tuple" ? "no value" : v.kindName)", range)
            return nil
        }
        let actual = builder!.function.type(of: value)
        if actual.dtype != dtype {
            error("\(what) must be \(typeText(t, scope)), found \(actual)", range)
            return nil
        }
        guard let dims = t.dims else {
            if actual.rank != 0 { error("\(what) must be a scalar \(dtype.rawValue), found \(actual)", range); return nil }
            return .tensor(value)
        }
        let boundBefore = Set(scope.values.keys)
        if !matchDims(dims, actual.shape, scope: scope) {
            // Names bound by this failed match are shown as written, not with the mismatching sizes.
            let fresh = Set(scope.values.keys).subtracting(boundBefore)
            error("\(what) must be \(typeText(t, scope, unbound: fresh)), found \(actual)", range)
            for n in fresh { scope.values[n] = nil }
            return nil
        }
        return .tensor(value)
    }

    /// A declared type with the sizes known in `scope` filled in (`f32[..., 64]` for `f32[..., in_features]`).
    /// Size names bound at the call keep their names, with their values after the type: `f32[B, 4] (B = 2)`.
    func typeText(_ t: TypeExpr, _ scope: Scope, unbound: Set<String> = []) -> String {
        guard let dims = t.dims else { return t.name }
        var bindings: [String] = []
        let parts = dims.map { d -> String in
            switch d {
            case .expr(let e):
                if case .name(let n) = e.kind, scope.lookup(n) == nil || unbound.contains(n) { return n }
                if case .name(let n) = e.kind, scope.isSizeBinder(n), let v = scope.lookup(n) {
                    if case .int(let i) = v, !bindings.contains("\(n) = \(i)") { bindings.append("\(n) = \(i)") }
                    return n
                }
                let saved = diags.diagnostics.count
                let v = evalCompileTime(e, scope: scope)
                if diags.diagnostics.count == saved {
                    if case .int(let i) = v { return String(i) }
                    if case .dim(let d) = v { return d.description }
                }
                return e.range.snippet
            case .rest(let l): return "..." + (l ?? "")
            case .any: return "_"
            }
        }
        return "\(t.name)[\(parts.joined(separator: ", "))]" + (bindings.isEmpty ? "" : " (\(bindings.joined(separator: ", ")))")
    }

    /// Matches declared dims against actual dims; unbound names become bound (symbolic generics).
    func matchDims(_ declared: [DimExpr], _ actual: [Dim], scope: Scope) -> Bool {
        let restCount = declared.filter { if case .rest = $0 { return true }; return false }.count
        guard restCount <= 1 else { return false }
        let fixed = declared.count - restCount
        if restCount == 0 && fixed != actual.count { return false }
        if actual.count < fixed { return false }
        var ai = 0
        for d in declared {
            switch d {
            case .rest(let label):
                let n = actual.count - fixed
                if let label { scope.values[label] = .list(actual[ai..<ai + n].map { $0.constant.map(SVal.int) ?? .dim($0) }) }
                ai += n
            case .any:
                ai += 1
            case .expr(let e):
                let a = actual[ai]
                ai += 1
                if case .name(let n) = e.kind, scope.lookup(n) == nil, Builtins.names.contains(n) == false {
                    scope.values[n] = a.constant.map(SVal.int) ?? .dim(a)
                    scope.sizeBinders.insert(n)
                    continue
                }
                let v = evalCompileTime(e, scope: scope)
                if case .int(let c) = v, c < 0 {
                    error("a tensor type cannot have the negative size \(c)", e.range)
                    return false
                }
                switch v {
                case .int(let c): if a != Dim(c) { return false }
                case .dim(let dd): if a != dd { return false }
                case .error: return false
                default: return false
                }
            }
        }
        return true
    }

    /// Inlines a call of a user function.
    func callFunction(_ f: FnDecl, _ inst: LayerInstance?, args: [Argument], values: [SVal], at range: SourceRange) -> SVal {
        callDepth += 1
        defer { callDepth -= 1 }
        if callDepth > 64 {
            error("call of '\(f.name)' nests more than 64 levels (unbounded recursion?)", range)
            return .error
        }
        calledFunctions.insert(ObjectIdentifier(f))
        let parent = inst.flatMap { instanceScopes[ObjectIdentifier($0)] } ?? scope(of: f.range)
        let scope = Scope(parent: parent)
        if let inst { scope.values["self"] = .layer(inst) }
        let name = inst.map { "'\($0.path)' (\($0.decl.name).\(f.name))" } ?? f.name
        guard bindArguments(f.params, args: args, values: values, into: scope, calleeName: name, at: range) else { return .error }
        // Metric definitions and `minimize` belong to the recipe's own blocks, not to the functions they call.
        let (savedSink, savedStep) = (metricSink, inStepBody)
        (metricSink, inStepBody) = (nil, false)
        let result = execBlock(f.body, Scope(parent: scope), owner: inst)
        (metricSink, inStepBody) = (savedSink, savedStep)
        if let rt = f.result, !result.isError {
            return check(result, against: rt, scope: scope, what: "the result of \(quotedCallee(name))", at: resultRange(f.body)) ?? .error
        }
        return result
    }

    /// Where a body's value comes from: its last statement (or the braces of an empty body).
    func resultRange(_ body: CodeBlock) -> SourceRange {
        guard let last = body.statements.last else { return body.range }
        switch last {
        case .expr(let e): return e.range
        case .binding(_, _, _, let r), .assign(_, _, let r), .forLoop(_, _, _, let r), .loop(_, _, _, let r),
             .conditional(_, _, _, let r), .minimize(_, _, let r): return r
        }
    }

    /// Calls a layer instance: its `forward` method.
    func callLayer(_ inst: LayerInstance, args: [Argument], values: [SVal], at range: SourceRange) -> SVal {
        guard let f = inst.methods["forward"] else {
            error("layer '\(inst.decl.name)' has no 'forward' function, so it cannot be called", range)
            return .error
        }
        return callFunction(f, inst, args: args, values: values, at: range)
    }
}
