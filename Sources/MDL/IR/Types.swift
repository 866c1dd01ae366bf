/// Element types of tensors.
public enum DType: String, CaseIterable, Sendable {
    case f32, i32, bool
    var isFloat: Bool { self == .f32 }
}

/// A tensor dimension: an integer polynomial over symbolic sizes such as `B` or `T`,
/// kept in canonical form so that equal sizes compare equal (`B*T == T*B`).
public struct Dim: Hashable, Sendable, CustomStringConvertible {
    /// Monomial (sorted symbol names, with repetition) -> coefficient; no zero coefficients.
    private(set) var terms: [[String]: Int]

    init(_ value: Int) { terms = value == 0 ? [:] : [[]: value] }
    init(symbol: String) { terms = [[symbol]: 1] }
    private init(terms: [[String]: Int]) { self.terms = terms.filter { $0.value != 0 } }

    /// The value when the dim has no symbols.
    var constant: Int? {
        if terms.isEmpty { return 0 }
        if terms.count == 1, let c = terms[[]] { return c }
        return nil
    }
    var symbols: Set<String> { Set(terms.keys.flatMap { $0 }) }

    static func + (a: Dim, b: Dim) -> Dim {
        var t = a.terms
        for (m, c) in b.terms { t[m, default: 0] &+= c }
        return Dim(terms: t)
    }
    static func - (a: Dim, b: Dim) -> Dim { a + b * Dim(-1) }
    static func * (a: Dim, b: Dim) -> Dim {
        var t: [[String]: Int] = [:]
        // Wrapping arithmetic: absurd sizes are rejected by the op rules, never trap here.
        for (ma, ca) in a.terms { for (mb, cb) in b.terms { t[(ma + mb).sorted(), default: 0] &+= ca &* cb } }
        return Dim(terms: t)
    }
    /// Exact division, or nil when the quotient is not a polynomial with integer coefficients.
    func divided(by d: Dim) -> Dim? {
        if let c = d.constant {
            guard c != 0, c != -1 || !terms.values.contains(Int.min), terms.values.allSatisfy({ $0 % c == 0 }) else { return nil }
            return Dim(terms: terms.mapValues { $0 / c })
        }
        // Division by a single monomial such as `B` or `2*T`.
        guard d.terms.count == 1, let (dm, dc) = d.terms.first else { return nil }
        var t: [[String]: Int] = [:]
        for (m, c) in terms {
            guard dc != -1, c % dc == 0 else { return nil }
            var rest = m
            for s in dm {
                guard let i = rest.firstIndex(of: s) else { return nil }
                rest.remove(at: i)
            }
            t[rest, default: 0] += c / dc
        }
        return Dim(terms: t)
    }
    /// Value under a binding of the symbols.
    func evaluate(_ env: [String: Int]) -> Int? {
        var total = 0
        for (m, c) in terms {
            var v = c
            for s in m { guard let x = env[s] else { return nil }; v = v &* x }
            total = total &+ v
        }
        return total
    }

    public var description: String {
        if terms.isEmpty { return "0" }
        // Higher-degree terms first, then by name; the constant last.
        let ordered = terms.sorted { a, b in
            if a.key.count != b.key.count { return a.key.count > b.key.count }
            return a.key.joined(separator: "*") < b.key.joined(separator: "*")
        }
        var out = ""
        for (i, (m, c)) in ordered.enumerated() {
            let mono = m.joined(separator: "*")
            var piece: String
            let magnitude = c.magnitude
            if m.isEmpty { piece = String(magnitude) }
            else if magnitude == 1 { piece = mono }
            else { piece = "\(magnitude)*\(mono)" }
            if i == 0 { out = c < 0 ? "-" + piece : piece }
            else { out += c < 0 ? "-" + piece : "+" + piece }
        }
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
