/// Index arithmetic for lowering: sizes as expressions, row-major strides, loop nests and
/// broadcasting. The smart constructors fold constants so that dumps stay readable; LLVM
/// would fold them anyway.
extension ScalarExpr {
    static func + (a: ScalarExpr, b: ScalarExpr) -> ScalarExpr {
        switch (a, b) {
        case (.index(0), _): return b
        case (_, .index(0)): return a
        case (.index(let x), .index(let y)): return .index(x &+ y)
        default: return .binary(.add, a, b)
        }
    }
    static func - (a: ScalarExpr, b: ScalarExpr) -> ScalarExpr {
        if case .index(0) = b { return a }
        if case .index(let x) = a, case .index(let y) = b { return .index(x &- y) }
        return .binary(.sub, a, b)
    }
    static func * (a: ScalarExpr, b: ScalarExpr) -> ScalarExpr {
        switch (a, b) {
        case (.index(0), _), (_, .index(0)): return .index(0)
        case (.index(1), _): return b
        case (_, .index(1)): return a
        case (.index(let x), .index(let y)): return .index(x &* y)
        default: return .binary(.mul, a, b)
        }
    }
    static func / (a: ScalarExpr, b: ScalarExpr) -> ScalarExpr {
        if case .index(1) = b { return a }
        return .binary(.div, a, b)
    }
    static func % (a: ScalarExpr, b: ScalarExpr) -> ScalarExpr { .binary(.mod, a, b) }
    static func v(_ name: String) -> ScalarExpr { .variable(name) }
    static func f32(_ x: Double) -> ScalarExpr { .constant(x, .f32) }
    func lt(_ b: ScalarExpr) -> ScalarExpr { .binary(.lt, self, b) }
    func ge(_ b: ScalarExpr) -> ScalarExpr { .binary(.ge, self, b) }
    func and(_ b: ScalarExpr) -> ScalarExpr { .binary(.and, self, b) }
    func or(_ b: ScalarExpr) -> ScalarExpr { .binary(.or, self, b) }

    /// A symbolic size as an expression of the run-time sizes.
    init(_ d: Dim) {
        var e = ScalarExpr.index(d.terms.offset)
        for (symbols, coefficient) in d.terms.monomials {
            var term = ScalarExpr.index(coefficient)
            for s in symbols { term = term * .size(s) }
            e = e + term
        }
        self = e
    }
}

/// Row-major strides of a shape.
func rowMajorStrides(_ shape: [Dim]) -> [ScalarExpr] {
    var out = [ScalarExpr](repeating: .index(1), count: shape.count)
    var s = ScalarExpr.index(1)
    for i in stride(from: shape.count - 1, through: 0, by: -1) {
        out[i] = s
        s = s * ScalarExpr(shape[i])
    }
    return out
}

/// Row-major strides of `shape`, in elements, as sizes.
func denseStrides(_ shape: [Dim]) -> [Dim] {
    var out = [Dim](repeating: 1, count: shape.count)
    for i in stride(from: shape.count - 2, through: 0, by: -1) { out[i] = out[i + 1] * shape[i + 1] }
    return out
}

/// The permutation that undoes `perm` (transpose(transpose(x, perm), inverse) == x).
func inversePermutation(_ perm: [Int]) -> [Int] {
    var inverse = [Int](repeating: 0, count: perm.count)
    for (axis, source) in perm.enumerated() { inverse[source] = axis }
    return inverse
}

/// `shape` with each run of adjacent axes that `sameRun` puts together merged into one axis
/// (row-major, so flat indices do not change), and the first original axis of each merged axis.
func mergingRuns(_ shape: [Dim], _ sameRun: (Int, Int) -> Bool) -> (shape: [Dim], firsts: [Int]) {
    var merged: [Dim] = [], firsts: [Int] = []
    for (axis, d) in shape.enumerated() {
        if axis > 0 && sameRun(axis - 1, axis) { merged[merged.count - 1] = merged[merged.count - 1] * d } else { merged.append(d); firsts.append(axis) }
    }
    return (merged, firsts)
}

/// Flat index of `indices` in a row-major `shape`.
func flatIndex(_ indices: [ScalarExpr], _ shape: [Dim]) -> ScalarExpr {
    zip(indices, rowMajorStrides(shape)).reduce(ScalarExpr.index(0)) { $0 + $1.0 * $1.1 }
}

/// Flat index into an operand of `shape` broadcast (NumPy, right-aligned) to a result indexed by `indices`.
func broadcastIndex(_ indices: [ScalarExpr], operand shape: [Dim]) -> ScalarExpr {
    let offset = indices.count - shape.count
    let strides = rowMajorStrides(shape)
    var e = ScalarExpr.index(0)
    for (axis, d) in shape.enumerated() where d != 1 { e = e + indices[offset + axis] * strides[axis] }
    return e
}

/// Loops over every index of `shape` (outermost first) with variables `prefix0`, `prefix1`, ...
func loopNest(_ shape: [Dim], prefix: String = "i", body: ([ScalarExpr]) -> [KernelStmt]) -> [KernelStmt] {
    let names = shape.indices.map { "\(prefix)\($0)" }
    var stmts = body(names.map(ScalarExpr.v))
    for (name, d) in zip(names, shape).reversed() { stmts = [.loop(name, ScalarExpr(d), stmts)] }
    return stmts
}

/// `loopNest` whose outermost loop runs in parallel (its iterations must write disjoint elements);
/// `work` is what the body costs per innermost iteration, in elements.
func parallelNest(_ shape: [Dim], prefix: String = "i", work: Int = 1, body: ([ScalarExpr]) -> [KernelStmt]) -> [KernelStmt] {
    let nest = loopNest(shape, prefix: prefix, body: body)
    guard case .loop(let v, let n, let inner)? = nest.first, nest.count == 1 else { return nest }
    return [.parallel(v, n, inner, work: min(1 << 30, staticWork(shape.dropFirst()) * work))]
}

/// Elements per iteration for the parallel threshold; each symbolic size in a dimension counts
/// as 64 (`B * T` as 4096).
func staticWork(_ dims: ArraySlice<Dim>) -> Int {
    dims.reduce(1) { w, d in
        let terms = d.terms
        let size = terms.monomials.reduce(terms.offset) { $0 + $1.1 * repeatElement(64, count: min(4, $1.0.count)).reduce(1, *) }
        return min(1 << 30, w * max(1, min(1 << 30, size)))
    }
}

extension Dim {
    /// The constant term and the monomials (sorted symbol lists with coefficients), in a fixed order.
    var terms: (offset: Int, monomials: [([String], Int)]) {
        (offsetTerm, monomialTerms.sorted { $0.0.joined(separator: "*") < $1.0.joined(separator: "*") })
    }
}
