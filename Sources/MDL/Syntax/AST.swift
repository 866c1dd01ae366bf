/// Abstract syntax of mdl. Every node keeps its source range.

/// An expression.
final class Expr {
    indirect enum Kind {
        case int(Int)
        case float(Double)
        case string(String)
        case bool(Bool)
        case name(String)
        case member(Expr, String)                 // a.b
        case call(Expr, [Argument])               // f(x, k = v)
        case index(Expr, [IndexItem])             // x[i, 1:3, :]
        case binary(String, Expr, Expr)           // a + b
        case unary(String, Expr)                  // -a, !a
        case range(Expr, Expr)                    // a..b (exclusive)
        case list([Expr])                         // [a, b]
        case comprehension(Expr, String, Expr)    // [e for x in xs]
        case tuple([Expr])                        // (a, b)
        case record([(String, Expr)])             // (x = a, y = b)
        case conditional(Expr, CodeBlock, CodeBlock)      // if c { a } else { b }
        case typeLiteral(TypeExpr)                // f32[B, 3] used as a value
        case error                                // placeholder after a syntax error
    }
    let kind: Kind
    let range: SourceRange
    init(_ kind: Kind, _ range: SourceRange) { self.kind = kind; self.range = range }
}

/// A call argument, optionally labelled.
struct Argument {
    var label: String?
    var value: Expr
    var range: SourceRange
}

/// One subscript of an index expression.
enum IndexItem {
    case single(Expr)                          // x[i]
    case slice(Expr?, Expr?, Expr?)            // x[a:b:s]
    case ellipsis                              // x[..., 0]
}

/// A dimension in a tensor type.
enum DimExpr {
    case expr(Expr)      // 784, B, in_f * 2
    case rest(String?)   // `...` or `...batch`: any number of leading dims
    case any             // `_`
}

/// A type: `f32[B, 784]`, `i32`, `int`, `(f32[B], f32)`.
struct TypeExpr {
    var name: String
    var dims: [DimExpr]?
    var elements: [TypeExpr]? // tuple type
    var range: SourceRange
}

/// A statement in a function body.
enum Stmt {
    case binding(isVar: Bool, names: [String], value: Expr, range: SourceRange)  // let x = e, var x = e, let (a, b) = e
    case assign(target: Expr, value: Expr, range: SourceRange)                     // x = e
    case expr(Expr)
    case forLoop(variable: String, sequence: Expr, body: CodeBlock, range: SourceRange)  // unrolled at compile time
    case loop(variable: String, sequence: Expr, body: CodeBlock, range: SourceRange)     // structured loop in the IR
    case conditional(condition: Expr, then: CodeBlock, otherwise: CodeBlock?, range: SourceRange)
    case minimize(optimizer: Expr, loss: Expr, range: SourceRange)
}

/// A braced sequence of statements; its value is the last statement if that is an expression.
struct CodeBlock {
    var statements: [Stmt]
    var range: SourceRange
    /// A syntax error was reported inside: its value is unknown, so no follow-up error uses it.
    var isMalformed = false
}

/// A parameter of a layer constructor or a function.
struct ParamDecl {
    var name: String
    var type: TypeExpr?
    var defaultValue: Expr?
    var range: SourceRange
}

/// `fn name(params) -> T { body }`; procedures (`proc`) are entry points of the binary.
final class FnDecl {
    let name: String
    let params: [ParamDecl]
    let result: TypeExpr?
    let body: CodeBlock
    let isProc: Bool
    let range: SourceRange
    init(name: String, params: [ParamDecl], result: TypeExpr?, body: CodeBlock, isProc: Bool, range: SourceRange) {
        self.name = name; self.params = params; self.result = result; self.body = body; self.isProc = isProc; self.range = range
    }
}

/// A member of a layer.
indirect enum Member {
    case param(name: String, type: TypeExpr, initializer: Expr, range: SourceRange)   // trained tensor
    case state(name: String, type: TypeExpr, initializer: Expr, range: SourceRange)   // non-trained tensor
    case field(name: String, value: Expr, range: SourceRange)                          // sublayer or constant
    case function(FnDecl)
    case conditional(condition: Expr, then: [Member], otherwise: [Member], range: SourceRange)
}

/// `layer Name(params) { members }` (also spelled `model`).
final class LayerDecl {
    let name: String
    let params: [ParamDecl]
    let members: [Member]
    let range: SourceRange
    init(name: String, params: [ParamDecl], members: [Member], range: SourceRange) {
        self.name = name; self.params = params; self.members = members; self.range = range
    }

    /// Every method, including those under member conditionals.
    var methodDecls: [FnDecl] {
        func collect(_ ms: [Member]) -> [FnDecl] {
            ms.flatMap { m -> [FnDecl] in
                switch m {
                case .function(let f): return [f]
                case .conditional(_, let t, let o, _): return collect(t) + collect(o)
                default: return []
                }
            }
        }
        return collect(members)
    }
}

/// An item of the `train { }` recipe.
enum TrainItem {
    case setting(name: String, value: Expr, range: SourceRange)                    // epochs = 3
    case step(batch: String, body: CodeBlock, range: SourceRange)                      // step(b) { minimize ... }
    case eval(split: Expr?, batch: String?, body: CodeBlock, range: SourceRange)       // eval on data.test (b) { metric = ... }
}

/// A top-level declaration.
enum Decl {
    case importDecl(path: [String], range: SourceRange)
    case constant(name: String, value: Expr, range: SourceRange)   // const / let at top level
    case layer(LayerDecl)
    case function(FnDecl)
    case train(items: [TrainItem], range: SourceRange)
}

/// A parsed file.
struct SourceModule {
    var file: SourceFile
    var decls: [Decl]
    /// The files this one imports directly (filled in by the driver).
    var imports: [SourceFile] = []
}
