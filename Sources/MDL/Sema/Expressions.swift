extension Elaborator {
    func eval(_ e: Expr, _ scope: Scope) -> SVal {
        switch e.kind {
        case .int(let v): return .int(v)
        case .float(let v): return .float(v)
        case .string(let s): return .string(s)
        case .bool(let b): return .bool(b)
        case .error: return .error
        case .name(let n): return lookup(n, scope, at: e.range)
        case .member(let base, let name): return member(eval(base, scope), name, at: e.range, baseRange: base.range)
        case .call(let callee, let args):
            let saved = pendingPath
            pendingPath = nil
            let f = eval(callee, scope)
            let values = args.map { eval($0.value, scope) }
            pendingPath = saved
            return call(f, args: args, values: values, at: e.range, calleeRange: callee.range)
        case .index(let base, let items): return index(eval(base, scope), items, scope, at: e.range)
        case .binary(let op, let l, let r):
            let lv = eval(l, scope), rv = eval(r, scope)
            return binary(op, lv, rv, e.range)
        case .unary(let op, let x):
            return unary(op, eval(x, scope), e.range)
        case .range(let lo, let hi):
            return .range(eval(lo, scope), eval(hi, scope), reversed: false)
        case .list(let xs):
            return .list(elements(xs.map { x in { self.eval(x, scope) } }))
        case .comprehension(let body, let v, let seq):
            guard let items = compileTimeSequence(eval(seq, scope), at: seq.range) else { return .error }
            return .list(elements(items.map { item in
                {
                    let inner = Scope(parent: scope)
                    inner.values[v] = item
                    return self.eval(body, inner)
                }
            }))
        case .tuple(let xs): return .tuple(xs.map { eval($0, scope) })
        case .record(let fields):
            var seen = Set<String>()
            for (n, _) in fields where !seen.insert(n).inserted { error("field '\(n)' appears twice", e.range) }
            return .record(fields.map { ($0.0, eval($0.1, scope)) })
        case .conditional(let c, let then, let otherwise):
            let cv = eval(c, scope)
            switch cv {
            case .bool(let b): return execBlock(b ? then : otherwise, Scope(parent: scope), owner: nil)
            case .error: return .error
            case .tensor:
                error("the condition of 'if' must be known at compile time; use where(cond, a, b) to select between tensors", c.range)
                return .error
            default:
                error("the condition of 'if' must be a bool, found \(cv.kindName)", c.range)
                return .error
            }
        case .typeLiteral(let t):
            guard let dt = DType(rawValue: t.name) else { return .error }
            var dims: [Dim] = []
            for d in t.dims ?? [] {
                guard case .expr(let de) = d, let dim = dimValue(eval(de, scope), at: de.range) else {
                    error("a tensor type used as a value needs concrete sizes", t.range)
                    return .error
                }
                dims.append(dim)
            }
            return .tensorType(TensorType(dt, dims))
        }
    }

    /// Evaluates list elements, naming any layers they create `<path>.<index>`.
    private func elements(_ thunks: [() -> SVal]) -> [SVal] {
        let base = pendingPath
        var out: [SVal] = []
        for (i, t) in thunks.enumerated() {
            pendingPath = base.map { "\($0).\(i)" }
            out.append(t())
        }
        pendingPath = base
        return out
    }

    func lookup(_ n: String, _ scope: Scope, at range: SourceRange) -> SVal {
        if let v = scope.lookup(n) {
            if case .global(let g) = v { return loadGlobal(g, at: range) }
            return v
        }
        if n == "training" { return .bool(builder?.training ?? false) }
        if Builtins.names.contains(n) { return .builtin(n) }
        error("unknown name '\(n)'\(suggestion(for: n, among: scope.allNames + Array(Builtins.names)))", range)
        return .error
    }

    func member(_ base: SVal, _ name: String, at range: SourceRange, baseRange: SourceRange) -> SVal {
        switch base {
        case .layer(let inst):
            if let v = memberValue(inst, name, at: range) { return v }
            error("layer '\(inst.decl.name)' has no member '\(name)'\(suggestion(for: name, among: Array(inst.members.keys) + Array(inst.methods.keys)))", range)
        case .record(let fields):
            if let f = fields.first(where: { $0.0 == name }) { return f.1 }
            error("record has no field '\(name)' (its fields: \(fields.map(\.0).joined(separator: ", ")))\(suggestion(for: name, among: fields.map(\.0)))", range)
        case .tensor(let v):
            let t = builder!.function.type(of: v)
            switch name {
            case "shape": return .list(t.shape.map { $0.constant.map(SVal.int) ?? .dim($0) })
            case "rank": return .int(t.rank)
            case "T":
                guard t.rank >= 2 else { error("'.T' needs a tensor of rank 2 or more, found \(t)", range); return .error }
                var perm = Array(0..<t.rank)
                perm.swapAt(t.rank - 1, t.rank - 2)
                return emit(.transpose, [v], ["perm": .ints(perm)], at: range)
            default:
                error("a tensor has no member '\(name)' (tensors have shape, rank and T)\(suggestion(for: name, among: ["shape", "rank", "T"]))", range)
            }
        case .dataset(let d):
            error("use a split of the dataset '\(d.name)' (\(d.splits.keys.sorted().joined(separator: ", "))) in 'eval on', not '.\(name)' here", range)
        case .error: break
        default:
            error("\(base.kindName) has no member '\(name)'", range)
        }
        return .error
    }

    func call(_ f: SVal, args: [Argument], values: [SVal], at range: SourceRange, calleeRange: SourceRange) -> SVal {
        if values.contains(where: \.isError) {
            // Still run constructors so their members are checked, but skip everything else.
            if case .layerType = f {} else { return .error }
        }
        switch f {
        case .layerType(let decl):
            return instantiate(decl, args: args, argValues: values, at: range)
        case .function(let fn, let inst):
            if fn.isProc && builder != nil && builder!.function.kind == .step {
                error("a training step cannot call the procedure '\(fn.name)'; use 'fn' for code a step runs", range)
                return .error
            }
            return callFunction(fn, inst, args: args, values: values, at: range)
        case .layer(let inst):
            return callLayer(inst, args: args, values: values, at: range)
        case .builtin(let name):
            return Builtins.call(name, self, Arguments(args: args, values: values, range: range, elaborator: self))
        case .error:
            return .error
        default:
            error("\(f.kindName) cannot be called", calleeRange)
            return .error
        }
    }

    // MARK: tensors

    /// Emits an op, inferring its result types; a type error is reported at `range`.
    func emit(_ op: OpKind, _ operands: [Value], _ attrs: [String: Attr], at range: SourceRange) -> SVal {
        let r = emitMulti(op, operands, attrs, at: range)
        guard let r, r.count == 1 else { return .error }
        return .tensor(r[0])
    }

    func emitMulti(_ op: OpKind, _ operands: [Value], _ attrs: [String: Attr], at range: SourceRange) -> [Value]? {
        guard let b = builder else {
            error("tensor operations can only appear inside functions", range)
            return nil
        }
        do {
            let types = try op.inferTypes(operands.map { b.function.type(of: $0) }, attrs)
            let results = types.map { b.function.newValue($0) }
            b.append(Operation(op: op, operands: operands, results: results, attrs: attrs, location: range))
            return results
        } catch let e as TypeError {
            error(e.message, range)
            return nil
        } catch {
            return nil
        }
    }

    /// A number, bool or size as a scalar tensor (of `dtype` when given), or the tensor itself.
    func toTensor(_ v: SVal, dtype: DType?, at range: SourceRange) -> Value? {
        switch v {
        case .tensor(let t): return t
        case .int(let i):
            let d = dtype ?? .i32
            if d == .i32 && !fitsInt32(i) {
                error("the integer \(i) does not fit in i32", range)
                return nil
            }
            return constant(d == .bool ? .bool(i != 0) : d == .f32 ? .float(Double(i)) : .int(i), d, at: range)
        case .float(let x):
            guard dtype == nil || dtype == .f32 else { return nil }
            return constant(.float(x), .f32, at: range)
        case .bool(let x):
            guard dtype == nil || dtype == .bool else { return nil }
            return constant(.bool(x), .bool, at: range)
        case .list:
            // A nested list of numbers is a constant tensor.
            var shape: [Dim] = []
            var flat: [SVal] = []
            guard flattenList(v, depth: 0, shape: &shape, into: &flat), !flat.isEmpty else { return nil }
            let isFloat = dtype == .f32 || flat.contains { if case .float = $0 { return true }; return false }
            var values: [Attr] = []
            for x in flat {
                if isFloat { values.append(.float(number(x)!)); continue }
                guard case .int(let i) = x, fitsInt32(i) else { error("the integer \(x.kindName == "an integer" ? "" : "value ")in this list does not fit in i32", range); return nil }
                values.append(.int(i))
            }
            return constant(.list(values), isFloat ? .f32 : .i32, shape: shape, at: range)
        case .dim(let d):
            if let c = d.constant { return toTensor(.int(c), dtype: dtype, at: range) }
            guard case .tensor(let s) = emit(.sym, [], ["dim": .dim(d)], at: range) else { return nil }
            if let dt = dtype, dt != .i32 {
                guard case .tensor(let c) = emit(.cast, [s], ["dtype": .dtype(dt)], at: range) else { return nil }
                return c
            }
            return s
        default: return nil
        }
    }

    private func flattenList(_ v: SVal, depth: Int, shape: inout [Dim], into flat: inout [SVal]) -> Bool {
        switch v {
        case .int, .float:
            if depth != shape.count { return false }
            flat.append(v)
            return true
        case .list(let xs):
            if depth == shape.count { shape.append(Dim(xs.count)) } else if depth > shape.count || shape[depth] != Dim(xs.count) { return false }
            return xs.allSatisfy { flattenList($0, depth: depth + 1, shape: &shape, into: &flat) }
        default: return false
        }
    }

    func constant(_ value: Attr, _ dtype: DType, shape: [Dim] = [], at range: SourceRange) -> Value? {
        guard case .tensor(let t) = emit(.constant, [], ["value": value, "dtype": .dtype(dtype), "shape": .dims(shape)], at: range) else { return nil }
        return t
    }

    func dtypeOf(_ v: SVal) -> DType? {
        if case .tensor(let t) = v { return builder?.function.type(of: t).dtype }
        return nil
    }

    /// A compile-time size (int or symbolic).
    func dimValue(_ v: SVal, at range: SourceRange) -> Dim? {
        switch v {
        case .int(let i): return Dim(i)
        case .dim(let d): return d
        case .error: return nil
        default:
            error("expected a compile-time size, found \(v.kindName)", range)
            return nil
        }
    }

    // MARK: operators

    private static let binaryOps: [String: OpKind] = [
        "+": .add, "-": .sub, "*": .mul, "/": .div, "%": .mod, "**": .pow,
        "==": .eq, "!=": .ne, "<": .lt, "<=": .le, ">": .gt, ">=": .ge, "&&": .and, "||": .or, "@": .matmul,
    ]

    func binary(_ op: String, _ l: SVal, _ r: SVal, _ range: SourceRange) -> SVal {
        if l.isError || r.isError { return .error }
        if let folded = foldBinary(op, l, r, range) { return folded }
        let isTensor: (SVal) -> Bool = { if case .tensor = $0 { return true }; return false }
        guard isTensor(l) || isTensor(r) || isSize(l) || isSize(r) else {
            error("operator '\(op)' cannot be applied to \(l.kindName) and \(r.kindName)", range)
            return .error
        }
        guard let kind = Elaborator.binaryOps[op] else { return .error }
        if kind == .matmul { return matmul(l, r, range) }
        // A number next to a tensor takes the tensor's element type.
        let hint = dtypeOf(l) ?? dtypeOf(r)
        guard let lt = toTensor(l, dtype: hint, at: range) else {
            error("cannot combine \(l.kindName) with \(hint.map { "an \($0.rawValue)" } ?? "a") tensor using '\(op)' (numbers take the tensor's element type; convert with f32(...) or i32(...))", range)
            return .error
        }
        guard let rt = toTensor(r, dtype: hint ?? builder?.function.type(of: lt).dtype, at: range) else {
            error("cannot combine \(hint.map { "an \($0.rawValue)" } ?? "a") tensor with \(r.kindName) using '\(op)' (numbers take the tensor's element type; convert with f32(...) or i32(...))", range)
            return .error
        }
        return emit(kind, [lt, rt], [:], at: range)
    }

    /// `@` with NumPy's rules for vectors: a 1-D left operand is a row, a 1-D right operand a
    /// column, and the added axis is removed from the result.
    func matmul(_ l: SVal, _ r: SVal, _ range: SourceRange) -> SVal {
        guard case .tensor(var a) = l, case .tensor(var b) = r, let fb = builder else {
            error("'@' multiplies tensors, found \(l.kindName) and \(r.kindName)", range)
            return .error
        }
        let f = fb.function
        let vectorLeft = f.type(of: a).rank == 1, vectorRight = f.type(of: b).rank == 1
        if vectorLeft, case .tensor(let x) = emit(.reshape, [a], ["shape": .dims([1] + f.type(of: a).shape)], at: range) { a = x }
        if vectorRight, case .tensor(let x) = emit(.reshape, [b], ["shape": .dims(f.type(of: b).shape + [1])], at: range) { b = x }
        guard case .tensor(let p) = emit(.matmul, [a, b], [:], at: range) else { return .error }
        guard vectorLeft || vectorRight else { return .tensor(p) }
        var shape = f.type(of: p).shape
        if vectorRight { shape.removeLast() }
        if vectorLeft { shape.remove(at: shape.count - (vectorRight ? 1 : 2)) }
        return emit(.reshape, [p], ["shape": .dims(shape)], at: range)
    }

    private func isSize(_ v: SVal) -> Bool { if case .dim = v { return true }; return false }

    /// Compile-time arithmetic on numbers, sizes, bools and strings.
    private func foldBinary(_ op: String, _ l: SVal, _ r: SVal, _ range: SourceRange) -> SVal? {
        switch (l, r) {
        case (.int(let a), .int(let b)):
            func checked(_ r: (partialValue: Int, overflow: Bool)) -> SVal {
                if r.overflow { error("integer overflow in '\(op)'", range); return .error }
                return .int(r.partialValue)
            }
            switch op {
            case "+": return checked(a.addingReportingOverflow(b))
            case "-": return checked(a.subtractingReportingOverflow(b))
            case "*": return checked(a.multipliedReportingOverflow(by: b))
            case "/":
                if b == 0 { error("division by zero", range); return .error }
                let (q, overflow) = a.dividedReportingOverflow(by: b)
                if overflow { error("integer overflow in '/'", range); return .error }
                return a.remainderReportingOverflow(dividingBy: b).partialValue == 0 ? .int(q) : .float(Double(a) / Double(b))
            case "%":
                if b == 0 { error("division by zero", range); return .error }
                let r = a.remainderReportingOverflow(dividingBy: b).partialValue
                return .int(r != 0 && (r < 0) != (b < 0) ? r &+ b : r)
            case "**":
                let p = pow(Double(a), Double(b))
                return b >= 0 && p.magnitude < 0x1p62 ? .int(Int(p)) : .float(p)
            default: return compare(op, a, b)
            }
        case (.int, .float), (.float, .int), (.float, .float):
            let a = number(l)!, b = number(r)!
            switch op {
            case "+": return .float(a + b)
            case "-": return .float(a - b)
            case "*": return .float(a * b)
            case "/": return .float(a / b)
            case "**": return .float(pow(a, b))
            case "%": return .float(a - b * (a / b).rounded(.down))
            default: return compare(op, a, b)
            }
        case (.bool(let a), .bool(let b)):
            switch op {
            case "&&": return .bool(a && b)
            case "||": return .bool(a || b)
            case "==": return .bool(a == b)
            case "!=": return .bool(a != b)
            default: break
            }
        case (.list(let a), .list(let b)) where op == "+":
            return .list(a + b)
        case (.string(let a), .string(let b)):
            switch op {
            case "==": return .bool(a == b)
            case "!=": return .bool(a != b)
            case "+": return .string(a + b)
            default: break
            }
        case (.dim, .int), (.int, .dim), (.dim, .dim):
            let a = dimValue(l, at: range)!, b = dimValue(r, at: range)!
            let result: Dim?
            switch op {
            case "+": result = a + b
            case "-": result = a - b
            case "*": result = a * b
            case "/":
                guard let q = a.divided(by: b) else {
                    error("cannot divide the size \(a) by \(b) exactly at compile time", range)
                    return .error
                }
                result = q
            case "==": return .bool(a == b)
            case "!=": return .bool(a != b)
            default: result = nil
            }
            if let d = result { return d.constant.map(SVal.int) ?? .dim(d) }
        default: break
        }
        switch (l, r) {
        case (.tensor, _), (_, .tensor), (.dim, _), (_, .dim): return nil
        default:
            error("operator '\(op)' cannot be applied to \(l.kindName) and \(r.kindName)", range)
            return .error
        }
    }

    /// Compile-time comparison of two numbers.
    private func compare<T: Comparable>(_ op: String, _ a: T, _ b: T) -> SVal? {
        switch op {
        case "==": return .bool(a == b)
        case "!=": return .bool(a != b)
        case "<": return .bool(a < b)
        case "<=": return .bool(a <= b)
        case ">": return .bool(a > b)
        case ">=": return .bool(a >= b)
        default: return nil
        }
    }

    func number(_ v: SVal) -> Double? {
        switch v {
        case .int(let i): return Double(i)
        case .float(let x): return x
        default: return nil
        }
    }

    func unary(_ op: String, _ v: SVal, _ range: SourceRange) -> SVal {
        switch (op, v) {
        case (_, .error): return .error
        case ("-", .int(let i)):
            if i == Int.min { error("integer overflow in '-'", range); return .error }
            return .int(-i)
        case ("-", .float(let x)): return .float(-x)
        case ("-", .dim(let d)): return .dim(Dim(0) - d)
        case ("!", .bool(let b)): return .bool(!b)
        case ("-", .tensor(let t)): return emit(.neg, [t], [:], at: range)
        case ("!", .tensor(let t)): return emit(.not, [t], [:], at: range)
        default:
            error("operator '\(op)' cannot be applied to \(v.kindName)", range)
            return .error
        }
    }

    // MARK: indexing

    func index(_ base: SVal, _ items: [IndexItem], _ scope: Scope, at range: SourceRange) -> SVal {
        switch base {
        case .error: return .error
        case .list(let xs), .tuple(let xs):
            guard items.count == 1, case .single(let e) = items[0] else {
                error("a list takes one integer subscript", range)
                return .error
            }
            let iv = eval(e, scope)
            guard case .int(var i) = iv else {
                if !iv.isError { error("a list subscript must be a compile-time integer, found \(iv.kindName)", e.range) }
                return .error
            }
            if i < 0 { i += xs.count }
            guard i >= 0 && i < xs.count else {
                error("index \(i) is out of range for a list of \(xs.count)", e.range)
                return .error
            }
            return xs[i]
        case .tensor(let t):
            return indexTensor(t, items, scope, at: range)
        default:
            error("\(base.kindName) cannot be subscripted", range)
            return .error
        }
    }

    private func indexTensor(_ t: Value, _ items: [IndexItem], _ scope: Scope, at range: SourceRange) -> SVal {
        let type = builder!.function.type(of: t)
        let ellipses = items.filter { if case .ellipsis = $0 { return true }; return false }.count
        guard ellipses <= 1 else { error("a subscript may contain '...' once", range); return .error }
        let explicit = items.count - ellipses
        guard explicit <= type.rank else {
            error("too many subscripts (\(explicit)) for \(type)", range)
            return .error
        }
        var expanded: [IndexItem?] = []
        for item in items {
            if case .ellipsis = item { expanded += Array(repeating: nil, count: type.rank - explicit) } else { expanded.append(item) }
        }
        while expanded.count < type.rank { expanded.append(nil) }
        var starts: [Dim] = [], ends: [Dim] = [], strides: [Int] = []
        var dropped: [Int] = []
        var tensorIndex: (axis: Int, value: Value)?
        for (axis, item) in expanded.enumerated() {
            let size = type.shape[axis]
            guard let item else { starts.append(0); ends.append(size); strides.append(1); continue }
            switch item {
            case .single(let e):
                let v = eval(e, scope)
                switch v {
                case .int, .dim:
                    guard var i = dimValue(v, at: e.range) else { return .error }
                    if let c = i.constant, c < 0 { i = size + i }
                    if let c = i.constant, let s = size.constant, c < 0 || c >= s {
                        error("index \(c) is out of range for axis \(axis) of \(type)", e.range)
                        return .error
                    }
                    starts.append(i); ends.append(i + 1); strides.append(1)
                    dropped.append(axis)
                case .tensor(let iv):
                    guard tensorIndex == nil else { error("a subscript may contain one tensor index", e.range); return .error }
                    tensorIndex = (axis, iv)
                    starts.append(0); ends.append(size); strides.append(1)
                case .error: return .error
                default:
                    error("a subscript must be an integer, a size or an i32 tensor, found \(v.kindName)", e.range)
                    return .error
                }
            case .slice(let lo, let hi, let st):
                func bound(_ e: Expr?, _ def: Dim) -> Dim? {
                    guard let e else { return def }
                    guard var d = dimValue(eval(e, scope), at: e.range) else { return nil }
                    if let c = d.constant, c < 0 { d = size + d }
                    return d
                }
                guard let s = bound(lo, 0), let en = bound(hi, size) else { return .error }
                var step = 1
                if let st {
                    guard case .int(let k) = eval(st, scope), k >= 1 else { error("a slice step must be a positive integer", st.range); return .error }
                    step = k
                }
                var clampedEnd = en
                if let c = en.constant, let sz = size.constant, c > sz { clampedEnd = Dim(sz) }
                if let c = s.constant, let sz = size.constant, c > sz || c < 0 {
                    let written = c < 0 ? c - sz : c
                    error("slice start \(written) is outside the size \(sz) of axis \(axis)", lo?.range ?? range)
                    return .error
                }
                starts.append(s); ends.append(clampedEnd); strides.append(step)
            case .ellipsis: break
            }
        }
        if let ti = tensorIndex, !(dropped.isEmpty && zip(starts, ends).enumerated().allSatisfy { $0.offset == ti.axis || ($0.element.0 == 0 && $0.element.1 == type.shape[$0.offset]) } && strides.allSatisfy { $0 == 1 }) {
            error("a tensor index can only be combined with full slices ':'", range)
            return .error
        }
        var current = t
        let trivial = zip(starts, ends).enumerated().allSatisfy { $0.element.0 == 0 && $0.element.1 == type.shape[$0.offset] } && strides.allSatisfy { $0 == 1 }
        if !trivial {
            guard case .tensor(let s) = emit(.slice, [current], ["starts": .dims(starts), "ends": .dims(ends), "strides": .ints(strides)], at: range) else { return .error }
            current = s
        }
        if !dropped.isEmpty {
            let shape = builder!.function.type(of: current).shape.enumerated().filter { !dropped.contains($0.offset) }.map(\.element)
            guard case .tensor(let r) = emit(.reshape, [current], ["shape": .dims(shape)], at: range) else { return .error }
            current = r
        }
        if let ti = tensorIndex {
            return emit(.take, [current, ti.value], ["axis": .int(ti.axis)], at: range)
        }
        return .tensor(current)
    }
}

import Foundation
