/// In-place state updates: a state write `global.set @G, V` normally computes V into its own
/// buffer and copies it into G when the function returns. When V is computed by a flat
/// elementwise kernel that reads G only at the element it writes, and nothing after that
/// kernel reads G's old value, the kernel writes straight into G: no buffer for V, no copy.
/// This is the optimizer update (parameters, moments) and batch-norm running statistics.
/// Slice updates (`update`) of a buffer nothing reads afterwards write into it the same way.
extension FunctionLowering {
    /// Rewrites `steps` (a function's top level) for the writes it can do in place; returns the writes still needing a copy.
    mutating func writeInPlace(_ steps: inout [Step], allocated: inout [BufferID], results: [BufferID]) -> [(global: BufferID, value: BufferID)] {
        var remaining: [(global: BufferID, value: BufferID)] = []
        for index in pendingGlobalWrites.indices {
            let w = pendingGlobalWrites[index]
            let (g, v) = (w.global, w.value)
            guard buffers[v.id].role == .temporary, !results.contains(v), buffers[g.id].shape == buffers[v.id].shape, buffers[g.id].dtype == buffers[v.id].dtype,
                  let k = steps.firstIndex(where: { if case .kernel(let kernel, _) = $0 { return kernel.buffers.first == v }; return false }),
                  case .kernel(let kernel, let op) = steps[k], kernel.body.count == 1,
                  case .parallel(let i, let n, let body, let work) = kernel.body[0], body.count == 1,
                  case .store(v, .variable(i), let value) = body[0],
                  value.loadIndices(of: g).allSatisfy({ if case .variable(i) = $0 { return true }; return false }),
                  !value.buffers.contains(v),
                  !steps[(k + 1)...].contains(where: { $0.buffersUsed.contains(g) }) else {
                remaining.append(w)
                continue
            }
            var updated = kernel
            updated.body = [.parallel(i, n, [.store(g, .variable(i), value)], work: work)]
            updated.buffers = [g] + kernel.buffers.dropFirst().filter { $0 != g }
            steps[k] = .kernel(updated, sourceOp: op)
            for j in (k + 1)..<steps.count { steps[j] = steps[j].renaming(v, to: g) }
            steps.removeAll { if case .alloc(v) = $0 { return true }; return false }
            allocated.removeAll { $0 == v }
            pendingGlobalWrites = pendingGlobalWrites.map { ($0.global, $0.value == v ? g : $0.value) }
            remaining = remaining.map { ($0.global, $0.value == v ? g : $0.value) }
        }
        return remaining
    }
}

extension FunctionLowering {
    /// In-place slice updates: `update(x, k, v)` copies x and writes v over one slice. When x is a
    /// temporary of this block that nothing reads afterwards, the kernel writes v into x itself and
    /// x becomes the result: an unrolled loop's `hs = update(hs, t, h)`, and its gradient, no longer
    /// copy the whole buffer at every step.
    mutating func updateSlicesInPlace(_ steps: inout [Step], allocated: inout [BufferID], results: inout [BufferID]) {
        var dropped: [BufferID] = []
        // An update of an update written in place reads the buffer the first one was renamed to.
        var renamed: [BufferID: BufferID] = [:]
        for k in steps.indices {
            guard case .kernel(let kernel, let op) = steps[k], let out = kernel.buffers.first, var base = sliceUpdates[out] else { continue }
            while let b = renamed[base] { base = b }
            guard allocated.contains(base), !results.contains(base), !steps[(k + 1)...].contains(where: { $0.buffersUsed.contains(base) }),
                  case .parallel(_, _, let copy, _)? = kernel.body.first, copy.count == 1, case .store(out, _, .load(base, _)) = copy[0] else { continue }
            var updated = kernel
            updated.body = Array(kernel.body.dropFirst())
            steps[k] = Step.kernel(updated, sourceOp: op).renaming(out, to: base)
            for j in (k + 1)..<steps.count { steps[j] = steps[j].renaming(out, to: base) }
            dropped.append(out)
            renamed[out] = base
            results = results.map { $0 == out ? base : $0 }
            pendingGlobalWrites = pendingGlobalWrites.map { ($0.global, $0.value == out ? base : $0.value) }
        }
        steps.removeAll { if case .alloc(let b) = $0 { return dropped.contains(b) }; return false }
        allocated.removeAll { dropped.contains($0) }
    }
}

extension ScalarExpr {
    /// The index expressions of every load of `buffer`.
    func loadIndices(of buffer: BufferID) -> [ScalarExpr] {
        switch self {
        case .load(let b, let i): return (b == buffer ? [i] : []) + i.loadIndices(of: buffer)
        case .unary(_, let x), .convert(let x, _), .table(_, _, let x): return x.loadIndices(of: buffer)
        case .binary(_, let a, let b): return a.loadIndices(of: buffer) + b.loadIndices(of: buffer)
        case .select(let c, let a, let b): return c.loadIndices(of: buffer) + a.loadIndices(of: buffer) + b.loadIndices(of: buffer)
        case .call(_, let args): return args.flatMap { $0.loadIndices(of: buffer) }
        case .index, .constant, .size, .variable: return []
        }
    }

    func renaming(_ from: BufferID, to: BufferID) -> ScalarExpr {
        if case .load(let b, let i) = self { return .load(b == from ? to : b, i.renaming(from, to: to)) }
        return mappingChildren { $0.renaming(from, to: to) }
    }

    /// The expression with `f` applied to each direct subexpression.
    func mappingChildren(_ f: (ScalarExpr) -> ScalarExpr) -> ScalarExpr {
        switch self {
        case .load(let b, let i): return .load(b, f(i))
        case .unary(let op, let x): return .unary(op, f(x))
        case .convert(let x, let t): return .convert(f(x), t)
        case .table(let values, let t, let x): return .table(values, t, f(x))
        case .binary(let op, let a, let b): return .binary(op, f(a), f(b))
        case .select(let c, let a, let b): return .select(f(c), f(a), f(b))
        case .call(let op, let args): return .call(op, args.map(f))
        case .index, .constant, .size, .variable: return self
        }
    }
}

extension KernelStmt {
    func renaming(_ from: BufferID, to: BufferID) -> KernelStmt {
        let e = { (x: ScalarExpr) in x.renaming(from, to: to) }
        let b = { (b: BufferID) in b == from ? to : b }
        switch self {
        case .loop(let v, let n, let body): return .loop(v, e(n), body.map { $0.renaming(from, to: to) })
        case .parallel(let v, let n, let body, let work): return .parallel(v, e(n), body.map { $0.renaming(from, to: to) }, work: work)
        case .store(let buf, let i, let x): return .store(b(buf), e(i), e(x))
        case .bind(let v, let x): return .bind(v, e(x))
        case .declare(let v, let x): return .declare(v, e(x))
        case .assign(let v, let x): return .assign(v, e(x))
        case .accumulate(let v, let op, let x): return .accumulate(v, op, e(x))
        case .when(let c, let body): return .when(e(c), body.map { $0.renaming(from, to: to) })
        case .fail(let c, let code, let message): return .fail(e(c), code, message)
        case .gemm(var g):
            g.a = b(g.a); g.b = b(g.b); g.c = b(g.c)
            g.aOffset = e(g.aOffset); g.bOffset = e(g.bOffset); g.cOffset = e(g.cOffset)
            g.lda = e(g.lda); g.ldb = e(g.ldb); g.ldc = e(g.ldc)
            return .gemm(g)
        }
    }
}

extension Step {
    func renaming(_ from: BufferID, to: BufferID) -> Step {
        let b = { (b: BufferID) in b == from ? to : b }
        switch self {
        case .alloc(let x): return .alloc(b(x))
        case .free(let x): return .free(b(x))
        case .copy(let t, let f): return .copy(to: b(t), from: b(f))
        case .kernel(var k, let op):
            var seen: [BufferID] = []
            for x in k.buffers.map(b) where !seen.contains(x) { seen.append(x) }
            k.buffers = seen
            k.body = k.body.map { $0.renaming(from, to: to) }
            return .kernel(k, sourceOp: op)
        case .loop(let i, let lo, let hi, let body): return .loop(index: b(i), low: b(lo), high: b(hi), body: body.map { $0.renaming(from, to: to) })
        case .sequence(let steps): return .sequence(steps.map { $0.renaming(from, to: to) })
        }
    }
}
