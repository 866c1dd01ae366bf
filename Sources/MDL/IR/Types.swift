/// Element types of tensors.
public enum DType: String, CaseIterable, Sendable {
    case f32, i32, bool
    var isFloat: Bool { self == .f32 }
}

/// A tensor dimension: an integer polynomial over symbolic sizes such as `B` or `T`,
/// kept in canonical form so that equal sizes compare equal (`B*T == T*B`). Constants, the
/// common case, carry no dictionary, so comparing and combining them does no hashing.
public struct Dim: Hashable, Sendable, CustomStringConvertible {
    /// The constant term.
    private var offset: Int
    /// Non-constant monomials (sorted symbol names, with repetition) -> coefficient; no zeros.
    private var monomials: [[String]: Int]

    init(_ value: Int) { offset = value; monomials = [:] }
    init(symbol: String) { offset = 0; monomials = [[symbol]: 1] }
    private init(offset: Int, monomials: [[String]: Int]) {
        self.offset = offset
        self.monomials = monomials.filter { $0.value != 0 }
    }

    var offsetTerm: Int { offset }
    var monomialTerms: [([String], Int)] { monomials.map { ($0.key, $0.value) } }
    /// The value when the dim has no symbols.
    var constant: Int? { monomials.isEmpty ? offset : nil }
    var symbols: Set<String> { Set(monomials.keys.flatMap { $0 }) }
    /// The symbol when the dim is exactly one symbol (`B`), which a run-time shape can bind.
    var singleSymbol: String? {
        guard offset == 0, monomials.count == 1, let (m, c) = monomials.first, m.count == 1, c == 1 else { return nil }
        return m[0]
    }

    // Wrapping arithmetic: absurd sizes are rejected by the op rules, never trap here.
    static func + (a: Dim, b: Dim) -> Dim {
        if b.monomials.isEmpty { return Dim(offset: a.offset &+ b.offset, monomials: a.monomials) }
        var t = a.monomials
        for (m, c) in b.monomials { t[m, default: 0] &+= c }
        return Dim(offset: a.offset &+ b.offset, monomials: t)
    }
    static func - (a: Dim, b: Dim) -> Dim { a + b * Dim(-1) }
    static func * (a: Dim, b: Dim) -> Dim {
        if a.monomials.isEmpty && b.monomials.isEmpty { return Dim(a.offset &* b.offset) }
        var t: [[String]: Int] = [:]
        for (ma, ca) in a.monomials {
            if b.offset != 0 { t[ma, default: 0] &+= ca &* b.offset }
            for (mb, cb) in b.monomials { t[(ma + mb).sorted(), default: 0] &+= ca &* cb }
        }
        if a.offset != 0 { for (mb, cb) in b.monomials { t[mb, default: 0] &+= a.offset &* cb } }
        return Dim(offset: a.offset &* b.offset, monomials: t)
    }
    /// Exact division, or nil when the quotient is not a polynomial with integer coefficients.
    func divided(by d: Dim) -> Dim? {
        if let c = d.constant {
            guard c != 0, c != -1 || (offset != Int.min && !monomials.values.contains(Int.min)),
                  offset % c == 0, monomials.values.allSatisfy({ $0 % c == 0 }) else { return nil }
            return Dim(offset: offset / c, monomials: monomials.mapValues { $0 / c })
        }
        // Division by a single monomial such as `B` or `2*T`.
        guard d.offset == 0, d.monomials.count == 1, let (dm, dc) = d.monomials.first, offset == 0, dc != -1 else { return nil }
        var t: [[String]: Int] = [:]
        var constant = 0
        for (m, c) in monomials {
            guard c % dc == 0 else { return nil }
            var rest = m
            for s in dm {
                guard let i = rest.firstIndex(of: s) else { return nil }
                rest.remove(at: i)
            }
            if rest.isEmpty { constant &+= c / dc } else { t[rest, default: 0] &+= c / dc }
        }
        return Dim(offset: constant, monomials: t)
    }
    /// Value under a binding of the symbols.
    func evaluate(_ env: [String: Int]) -> Int? {
        var total = offset
        for (m, c) in monomials {
            var v = c
            for s in m { guard let x = env[s] else { return nil }; v = v &* x }
            total = total &+ v
        }
        return total
    }

    public var description: String {
        if monomials.isEmpty { return String(offset) }
        // Higher-degree terms first, then by name; the constant last.
        let ordered = monomials.sorted { a, b in
            if a.key.count != b.key.count { return a.key.count > b.key.count }
            return a.key.joined(separator: "*") < b.key.joined(separator: "*")
        }
        var out = ""
        for (i, (m, c)) in ordered.enumerated() {
            let magnitude = c.magnitude
            let piece = magnitude == 1 ? m.joined(separator: "*") : "\(magnitude)*" + m.joined(separator: "*")
            if i == 0 { out = c < 0 ? "-" + piece : piece } else { out += c < 0 ? "-" + piece : "+" + piece }
        }
        if offset != 0 { out += offset < 0 ? "-\(offset.magnitude)" : "+\(offset)" }
        return out
    }
}

extension Dim: ExpressibleByIntegerLiteral {
    public init(integerLiteral value: Int) { self.init(value) }
}

/// The static type of an SSA value: element type and (possibly symbolic) shape.
public struct TensorType: Hashable, Sendable, CustomStringConvertible {
    var dtype: DType
    var shape: [Dim]
    init(_ dtype: DType, _ shape: [Dim]) { self.dtype = dtype; self.shape = shape }
    var rank: Int { shape.count }
    public var description: String { "\(dtype.rawValue)[\(shape.map(\.description).joined(separator: ","))]" }
    /// Element count, when it does not depend on symbols.
    var staticCount: Int? {
        var n = 1
        for d in shape { guard let c = d.constant else { return nil }; n = n &* c }
        return n
    }
    func with(dtype: DType) -> TensorType { TensorType(dtype, shape) }
    func with(shape: [Dim]) -> TensorType { TensorType(dtype, shape) }
}

/// The Int nearest a double when it is finite and within `limit`, else nil (never traps).
func exactInt(_ v: Double, limit: Double = 0x1p62) -> Int? {
    guard v.isFinite, v.magnitude < limit else { return nil }
    return Int(v.rounded(.towardZero))
}

/// True when `v` is a value an i32 tensor can hold.
func fitsInt32(_ v: Int) -> Bool { v >= Int(Int32.min) && v <= Int(Int32.max) }

/// Axes in canonical (non-negative) form.
func normalizedAxes(_ axes: [Int], rank: Int) -> [Int] { axes.map { $0 < 0 ? $0 + rank : $0 } }

/// NumPy broadcasting of two shapes; nil when incompatible.
func broadcastShapes(_ a: [Dim], _ b: [Dim]) -> [Dim]? {
    let n = max(a.count, b.count)
    var out: [Dim] = []
    for i in 0..<n {
        let da = i < n - a.count ? Dim(1) : a[i - (n - a.count)]
        let db = i < n - b.count ? Dim(1) : b[i - (n - b.count)]
        if da == db { out.append(da) }
        else if da == 1 { out.append(db) }
        else if db == 1 { out.append(da) }
        else { return nil }
    }
    return out
}
