/// An SSA value, numbered within its function.
public struct Value: Hashable, Sendable { let id: Int }

/// An attribute value attached to an operation or a module entry.
public indirect enum Attr: Hashable, Sendable {
    case int(Int)
    case float(Double)
    case bool(Bool)
    case string(String)
    case symbol(String)          // @name: a global, a function or an optimizer
    case dtype(DType)
    case list([Attr])            // [1, 2], [B, 3], [@a, @b]
    case dim(Dim)                // a symbolic size such as B*T (constants print as ints)

    var intValue: Int? {
        switch self {
        case .int(let v): return v
        case .dim(let d): return d.constant
        default: return nil
        }
    }
    var doubleValue: Double? {
        switch self {
        case .float(let v): return v
        case .int(let v): return Double(v)
        case .bool(let b): return b ? 1 : 0
        default: return nil
        }
    }
    var dimValue: Dim? {
        switch self {
        case .int(let v): return Dim(v)
        case .dim(let d): return d
        default: return nil
        }
    }
    var ints: [Int]? {
        guard case .list(let xs) = self else { return nil }
        let vs = xs.compactMap(\.intValue)
        return vs.count == xs.count ? vs : nil
    }
    var dims: [Dim]? {
        guard case .list(let xs) = self else { return nil }
        let vs = xs.compactMap(\.dimValue)
        return vs.count == xs.count ? vs : nil
    }
    var symbols: [String]? {
        guard case .list(let xs) = self else { return nil }
        var out: [String] = []
        for x in xs { guard case .symbol(let s) = x else { return nil }; out.append(s) }
        return out
    }
    static func ints(_ v: [Int]) -> Attr { .list(v.map { .int($0) }) }
    static func dims(_ v: [Dim]) -> Attr { .list(v.map { $0.constant.map(Attr.int) ?? .dim($0) }) }
}

/// One operation: `results = name operands {attrs} : result types`, with nested blocks for loops.
public struct Operation {
    var op: OpKind
    var operands: [Value]
    var results: [Value]
    var attrs: [String: Attr]
    var regions: [Block] = []
    var location: SourceRange = .unknown
}

/// A straight-line list of operations with block arguments (a loop body's induction variable and carried values).
public struct Block {
    var arguments: [Value] = []
    var operations: [Operation] = []
}

/// What a function is for; decides how the runtime calls it.
public enum FunctionKind: String, CaseIterable, Sendable {
    case step      // one update: loss, and after autodiff its gradient and optimizer update
    case eval      // per-batch metrics on a data split
    case metric    // a whole-run metric computed by a procedure (e.g. mean return)
    case data      // generates a synthetic dataset from the seed
    case proc      // a command of the binary (sampling, generation, ...)
    case grad      // the loss and every parameter gradient of a step, without updating anything
}

/// A function of the Graph IR. Values index `types` and (optionally) `names`.
public final class Function {
    var name: String
    var kind: FunctionKind
    var attrs: [String: Attr] = [:]
    var body = Block()
    var resultTypes: [TensorType] = []
    var resultNames: [String] = []
    private(set) var types: [TensorType] = []
    var names: [Int: String] = [:]

    init(name: String, kind: FunctionKind) { self.name = name; self.kind = kind }

    var arguments: [Value] { body.arguments }

    /// A copy with its own name and kind (values keep their numbers).
    func copy(name: String, kind: FunctionKind) -> Function {
        let f = Function(name: name, kind: kind)
        f.attrs = attrs
        f.body = body
        f.resultTypes = resultTypes
        f.resultNames = resultNames
        f.types = types
        f.names = names
        return f
    }
    func type(of v: Value) -> TensorType { types[v.id] }
    func newValue(_ t: TensorType, name: String? = nil) -> Value {
        types.append(t)
        let v = Value(id: types.count - 1)
        if let name { names[v.id] = name }
        return v
    }
}

/// A module-level tensor: a trained parameter or non-trained state, with its initializer.
public struct Global {
    enum Kind: String { case param, state }
    var kind: Kind
    var name: String
    var type: TensorType
    var initializer: String          // zeros, ones, normal, uniform, constant, ...
    var initAttrs: [String: Attr]
    var location: SourceRange = .unknown
}

/// A named module entry with attributes: an optimizer over a parameter group or a data source.
public struct Entry {
    enum Kind: String { case optimizer, data }
    var kind: Kind
    var name: String
    var type: String                 // adam, sgd, mnist, ...
    var attrs: [String: Attr]
}

/// A whole program: globals, optimizers, data sources, the training recipe and functions.
public final class Module {
    var name: String
    var globals: [Global] = [] {
        didSet {
            // Appending one global (what passes do) extends the index; anything else rebuilds it.
            if globals.count == indexedCount + 1, globalIndex != nil, let last = globals.last {
                if globalIndex![last.name] == nil { globalIndex![last.name] = globals.count - 1 }
                indexedCount = globals.count
            } else {
                globalIndex = nil
            }
        }
    }
    private var globalIndex: [String: Int]?
    private var indexedCount = 0
    var entries: [Entry] = []
    var recipe: [String: Attr] = [:]
    var functions: [Function] = []
    init(name: String) { self.name = name }

    func global(_ name: String) -> Global? {
        if globalIndex == nil {
            globalIndex = Dictionary(globals.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { a, _ in a })
            indexedCount = globals.count
        }
        return globalIndex![name].map { globals[$0] }
    }
    func function(_ name: String) -> Function? { functions.first { $0.name == name } }
}
