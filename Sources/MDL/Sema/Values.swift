/// Compile-time values of elaboration. Tensors are SSA values of the function being built;
/// everything else (numbers, layers, lists) exists only while compiling.
indirect enum SVal {
    case int(Int)
    case float(Double)
    case bool(Bool)
    case string(String)
    case dim(Dim)                          // a symbolic size such as B
    case tensor(Value)
    case list([SVal])
    case tuple([SVal])
    case record([(String, SVal)])
    case range(SVal, SVal, reversed: Bool)
    case layer(LayerInstance)
    case layerType(LayerDecl)
    case function(FnDecl, LayerInstance?)  // a function, bound to its layer for methods
    case builtin(String)
    case tensorType(TensorType)            // f32[B, 3] used as a value
    case optimizer(String)
    case dataset(Dataset)
    case config(String, [String: Attr])       // an initializer, schedule or other named configuration
    case global(String)                    // a parameter or state tensor, loaded where it is used
    case error                             // already diagnosed; suppresses follow-up errors

    var isError: Bool { if case .error = self { return true }; return false }

    /// What kind of value this is, for messages.
    var kindName: String {
        switch self {
        case .int: return "an integer"
        case .float: return "a number"
        case .bool: return "a bool"
        case .string: return "a string"
        case .dim: return "a size"
        case .tensor: return "a tensor"
        case .list: return "a list"
        case .tuple: return "a tuple"
        case .record: return "a record"
        case .range: return "a range"
        case .layer(let l): return "a layer instance of '\(l.decl.name)'"
        case .layerType(let d): return "the layer '\(d.name)'"
        case .function(let f, _): return "the function '\(f.name)'"
        case .builtin(let n): return "the builtin '\(n)'"
        case .tensorType: return "a tensor type"
        case .optimizer: return "an optimizer"
        case .dataset: return "a dataset"
        case .config(let n, _): return "the configuration '\(n)'"
        case .global: return "a tensor"
        case .error: return "an invalid value"
        }
    }
}

/// A layer created by a constructor call: its members and the globals it owns.
final class LayerInstance {
    let decl: LayerDecl
    let path: String                          // global name prefix, e.g. model.blocks.0
    var members: [String: SVal] = [:]
    var memberOrder: [String] = []
    var methods: [String: FnDecl] = [:]
    var params: [String] = []                 // global names of trained tensors, this layer only
    init(decl: LayerDecl, path: String) { self.decl = decl; self.path = path }

    /// Every trained parameter of this layer and its sublayers, in declaration order.
    var allParams: [String] {
        var out = params
        for name in memberOrder {
            for sub in LayerInstance.layers(in: members[name]!) { out += sub.allParams }
        }
        return out
    }

    static func layers(in v: SVal) -> [LayerInstance] {
        switch v {
        case .layer(let l): return [l]
        case .list(let xs), .tuple(let xs): return xs.flatMap(layers)
        default: return []
        }
    }
}

/// A data source of the recipe: named splits whose fields are batched tensors.
struct Dataset {
    var name: String                           // entry name in the module (e.g. "data")
    var source: String                         // mnist, fashion_mnist, digits, shakespeare, mutag, or "generator"
    var attrs: [String: Attr] = [:]
    var splits: [String: [(String, TensorType)]]
}

/// A lexical scope of local bindings.
final class Scope {
    let parent: Scope?
    var values: [String: SVal] = [:]
    var mutable: Set<String> = []
    /// Parameters bound here, with the function they belong to (for messages).
    var parameterOf: [String: String] = [:]
    /// Size names bound by matching a tensor type (`B` in `x: f32[B, 784]`).
    var sizeBinders: Set<String> = []
    init(parent: Scope?) { self.parent = parent }

    func lookup(_ name: String) -> SVal? { values[name] ?? parent?.lookup(name) }
    /// The scope that declares `name`.
    func owner(of name: String) -> Scope? { values[name] != nil ? self : parent?.owner(of: name) }
    func isSizeBinder(_ name: String) -> Bool { owner(of: name)?.sizeBinders.contains(name) ?? false }
    var allNames: [String] { Array(values.keys) + (parent?.allNames ?? []) }
}
