/// Reads IR text (the printer's output) back into a module, reporting errors with locations.
public struct IRParser {
    private enum Tok: Equatable {
        case ident(String)      // also dotted names such as b.x and op names such as random.normal
        case value(String)      // %name
        case symbol(String)     // @name
        case int(Int)
        case float(Double)
        case string(String)
        case punct(String)
        case eof
    }
    private var toks: [(Tok, Int)] = []
    private var pos = 0
    private var depth = 0
    private static let maxDepth = 100
    private let file: SourceFile
    private let diags: DiagnosticEngine

    public init(file: SourceFile, diags: DiagnosticEngine) {
        self.file = file
        self.diags = diags
        lex()
    }

    private struct Failure: Error {}

    private mutating func lex() {
        let b = file.bytes
        var i = 0
        func isName(_ c: UInt8) -> Bool { (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == 95 || c == 46 }
        while i < b.count {
            let c = b[i]
            if c == 32 || c == 9 || c == 10 || c == 13 { i += 1; continue }
            if c == UInt8(ascii: "/") && i + 1 < b.count && b[i + 1] == UInt8(ascii: "/") {
                while i < b.count && b[i] != 10 { i += 1 }
                continue
            }
            let s = i
            if c == UInt8(ascii: "%") || c == UInt8(ascii: "@") {
                i += 1
                while i < b.count && isName(b[i]) { i += 1 }
                let name = String(decoding: b[(s + 1)..<i], as: UTF8.self)
                toks.append((c == UInt8(ascii: "%") ? .value(name) : .symbol(name), s))
                continue
            }
            if (c >= 48 && c <= 57) || (c == UInt8(ascii: "-") && i + 1 < b.count && (b[i + 1] >= 48 && b[i + 1] <= 57 || b[i + 1] == UInt8(ascii: "i"))) {
                i += 1
                while i < b.count && ((b[i] >= 48 && b[i] <= 57) || b[i] == 46 || b[i] == UInt8(ascii: "e") || b[i] == UInt8(ascii: "i") || b[i] == UInt8(ascii: "n") || b[i] == UInt8(ascii: "f") ||
                                      ((b[i] == UInt8(ascii: "-") || b[i] == UInt8(ascii: "+")) && (b[i - 1] == UInt8(ascii: "e")))) { i += 1 }
                let text = String(decoding: b[s..<i], as: UTF8.self)
                if let v = Int(text) { toks.append((.int(v), s)) }
                else if text == "-inf" { toks.append((.float(-.infinity), s)) }
                else if let v = Double(text) { toks.append((.float(v), s)) }
                else { diags.error("malformed number '\(text)'", at: SourceRange(file: file, start: s, end: i)); toks.append((.int(0), s)) }
                continue
            }
            if isName(c) {
                while i < b.count && isName(b[i]) { i += 1 }
                toks.append((.ident(String(decoding: b[s..<i], as: UTF8.self)), s))
                continue
            }
            if c == UInt8(ascii: "\"") {
                i += 1
                var v = [UInt8]()
                while i < b.count && b[i] != UInt8(ascii: "\"") && b[i] != 10 {
                    if b[i] == UInt8(ascii: "\\") && i + 1 < b.count {
                        v.append(b[i + 1] == UInt8(ascii: "n") ? 10 : b[i + 1])
                        i += 2
                        continue
                    }
                    v.append(b[i])
                    i += 1
                }
                if i < b.count && b[i] == UInt8(ascii: "\"") { i += 1 } else { diags.error("unterminated string", at: SourceRange(file: file, start: s, end: s + 1)) }
                toks.append((.string(String(decoding: v, as: UTF8.self)), s))
                continue
            }
            if c == UInt8(ascii: "-") && i + 1 < b.count && b[i + 1] == UInt8(ascii: ">") {
                toks.append((.punct("->"), s))
                i += 2
                continue
            }
            toks.append((.punct(String(UnicodeScalar(c))), s))
            i += 1
        }
        toks.append((.eof, b.count))
    }

    private var tok: Tok { toks[pos].0 }
    private mutating func advance() { if pos < toks.count - 1 { pos += 1 } }
    private func err(_ m: String) -> Failure {
        let start = toks[pos].1
        diags.error(m, at: SourceRange(file: file, start: start, end: min(file.bytes.count, start + 1)))
        return Failure()
    }
    private func describe(_ t: Tok) -> String {
        switch t {
        case .ident(let s): return "'\(s)'"
        case .value(let s): return "'%\(s)'"
        case .symbol(let s): return "'@\(s)'"
        case .int(let v): return "'\(v)'"
        case .float(let v): return "'\(v)'"
        case .string: return "a string"
        case .punct(let p): return "'\(p)'"
        case .eof: return "end of file"
        }
    }
    private mutating func expect(_ p: String) throws {
        guard tok == .punct(p) else { throw err("expected '\(p)', found \(describe(tok))") }
        advance()
    }
    private mutating func ident() throws -> String {
        guard case .ident(let s) = tok else { throw err("expected a name, found \(describe(tok))") }
        advance()
        return s
    }
    private mutating func symbolName() throws -> String {
        guard case .symbol(let s) = tok else { throw err("expected '@name', found \(describe(tok))") }
        advance()
        return s
    }

    /// Parses a whole module; nil if there were errors (already reported).
    public mutating func parseModule() -> Module? {
        do {
            guard tok == .ident("module") else { throw err("IR text must start with 'module @name'") }
            advance()
            let m = Module(name: try symbolName())
            while tok != .eof {
                let kw = try ident()
                switch kw {
                case "param", "state":
                    let name = try symbolName()
                    try expect(":")
                    let type = try parseType()
                    try expect("=")
                    let initializer = try ident()
                    let attrs = try parseAttrsIfAny()
                    m.globals.append(Global(kind: kw == "param" ? .param : .state, name: name, type: type, initializer: initializer, initAttrs: attrs))
                case "optimizer", "data":
                    let name = try symbolName()
                    try expect("=")
                    let type = try ident()
                    m.entries.append(Entry(kind: kw == "optimizer" ? .optimizer : .data, name: name, type: type, attrs: try parseAttrsIfAny()))
                case "recipe":
                    m.recipe = try parseAttrsIfAny()
                case "func":
                    m.functions.append(try parseFunction(m))
                default:
                    pos -= 1
                    throw err("expected 'param', 'state', 'optimizer', 'data', 'recipe' or 'func', found '\(kw)'")
                }
            }
            return m
        } catch {
            return nil
        }
    }

    private mutating func parseType() throws -> TensorType {
        let name = try ident()
        guard let dt = DType(rawValue: name) else { pos -= 1; throw err("unknown element type '\(name)'") }
        try expect("[")
        var dims: [Dim] = []
        while tok != .punct("]") {
            dims.append(try parseDim())
            if tok == .punct(",") { advance() } else { break }
        }
        try expect("]")
        return TensorType(dt, dims)
    }

    private mutating func parseDim() throws -> Dim {
        var total = try parseDimTerm()
        while true {
            if tok == .punct("+") { advance(); total = total + (try parseDimTerm()) }
            else if case .int(let v) = tok, v < 0 { advance(); total = total + Dim(v) * (try parseDimTail()) }
            else if tok == .punct("-") { advance(); total = total - (try parseDimTerm()) }
            else { return total }
        }
    }
    private mutating func parseDimTerm() throws -> Dim {
        var p = try parseDimFactor()
        while tok == .punct("*") { advance(); p = p * (try parseDimFactor()) }
        return p
    }
    /// The rest of a term after a leading (negative) coefficient has been read.
    private mutating func parseDimTail() throws -> Dim {
        var p = Dim(1)
        while tok == .punct("*") { advance(); p = p * (try parseDimFactor()) }
        return p
    }
    private mutating func parseDimFactor() throws -> Dim {
        switch tok {
        case .int(let v): advance(); return Dim(v)
        case .ident(let s): advance(); return Dim(symbol: s)
        case .punct("-"):
            advance()
            return Dim(-1) * (try parseDimFactor())
        default: throw err("expected a size, found \(describe(tok))")
        }
    }

    private mutating func parseAttrsIfAny() throws -> [String: Attr] {
        guard tok == .punct("{") else { return [:] }
        // `{` followed by `^` or an op is a region, not attributes.
        if case .ident = toks[pos + 1].0, toks[pos + 2].0 == .punct("=") {} else if toks[pos + 1].0 == .punct("}") {} else { return [:] }
        advance()
        var out: [String: Attr] = [:]
        while tok != .punct("}") {
            let k = try ident()
            try expect("=")
            out[k] = try parseAttr()
            if tok == .punct(",") { advance() } else { break }
        }
        try expect("}")
        return out
    }

    private mutating func parseAttr() throws -> Attr {
        switch tok {
        case .float(let v): advance(); return .float(v)
        case .string(let s): advance(); return .string(s)
        case .symbol(let s): advance(); return .symbol(s)
        case .punct("["):
            depth += 1
            defer { depth -= 1 }
            guard depth <= IRParser.maxDepth else { throw err("attribute lists nested more than \(IRParser.maxDepth) levels") }
            advance()
            var xs: [Attr] = []
            while tok != .punct("]") {
                xs.append(try parseAttr())
                if tok == .punct(",") { advance() } else { break }
            }
            try expect("]")
            return .list(xs)
        case .ident("true"): advance(); return .bool(true)
        case .ident("false"): advance(); return .bool(false)
        case .ident("inf"): advance(); return .float(.infinity)
        case .ident("nan"): advance(); return .float(.nan)
        case .ident(let s) where DType(rawValue: s) != nil: advance(); return .dtype(DType(rawValue: s)!)
        case .int, .ident, .punct("-"):
            let d = try parseDim()
            if let c = d.constant { return .int(c) }
            return .dim(d)
        default: throw err("expected an attribute value, found \(describe(tok))")
        }
    }

    private mutating func parseFunction(_ m: Module) throws -> Function {
        let kindName = try ident()
        guard let kind = FunctionKind(rawValue: kindName) else { pos -= 1; throw err("unknown function kind '\(kindName)'") }
        let f = Function(name: try symbolName(), kind: kind)
        var scope: [String: Value] = [:]
        try expect("(")
        while tok != .punct(")") {
            guard case .value(let n) = tok else { throw err("expected an argument '%name', found \(describe(tok))") }
            advance()
            try expect(":")
            let v = f.newValue(try parseType(), name: n)
            if scope[n] != nil { pos -= 1; throw err("argument '%\(n)' is defined twice") }
            scope[n] = v
            f.body.arguments.append(v)
            if tok == .punct(",") { advance() } else { break }
        }
        try expect(")")
        try expect("->")
        try expect("(")
        while tok != .punct(")") {
            if case .ident(let n) = tok, toks[pos + 1].0 == .punct(":") {
                advance(); advance()
                f.resultNames.append(n)
            } else {
                f.resultNames.append("")
            }
            f.resultTypes.append(try parseType())
            if tok == .punct(",") { advance() } else { break }
        }
        try expect(")")
        if f.resultNames.allSatisfy(\.isEmpty) { f.resultNames = [] }
        if tok == .ident("attributes") {
            advance()
            f.attrs = try parseAttrsIfAny()
        }
        try expect("{")
        f.body.operations = try parseOps(f, m, &scope)
        try expect("}")
        return f
    }

    private mutating func parseOps(_ f: Function, _ m: Module, _ scope: inout [String: Value]) throws -> [Operation] {
        var ops: [Operation] = []
        while tok != .punct("}") && tok != .eof {
            let opStart = pos
            var resultNames: [String] = []
            if case .value(let n) = tok {
                advance()
                var count = 1
                if tok == .punct(":") {
                    advance()
                    guard case .int(let c) = tok, c >= 1, c <= 4096 else { throw err("expected a result count from 1 to 4096 after ':'") }
                    count = c
                    advance()
                }
                try expect("=")
                guard count == 1 || Int(n) != nil else { throw err("an op with several results is named by a number, such as %7:2") }
                resultNames = count == 1 ? [n] : (0..<count).map { "\(n)#\($0)" }
            }
            let opName = try ident()
            guard let kind = OpKind(rawValue: opName) else {
                pos -= 1
                throw err("unknown op '\(opName)'\(suggestion(for: opName, among: OpKind.allCases.map(\.name)))")
            }
            var operands: [Value] = []
            while case .value(let n) = tok {
                guard let v = scope[n] else { throw err("use of undefined value '%\(n)'") }
                operands.append(v)
                advance()
                if tok == .punct(",") { advance() } else { break }
            }
            let attrs = try parseAttrsIfAny()
            var regions: [Block] = []
            if tok == .punct("{") {
                depth += 1
                defer { depth -= 1 }
                guard depth <= IRParser.maxDepth else { throw err("loops nested more than \(IRParser.maxDepth) levels") }
                advance()
                var inner = scope
                try expect("^")
                try expect("(")
                var block = Block()
                while tok != .punct(")") {
                    guard case .value(let n) = tok else { throw err("expected a block argument") }
                    advance()
                    try expect(":")
                    let v = f.newValue(try parseType())
                    inner[n] = v
                    block.arguments.append(v)
                    if tok == .punct(",") { advance() } else { break }
                }
                try expect(")")
                try expect(":")
                block.operations = try parseOps(f, m, &inner)
                try expect("}")
                regions.append(block)
            }
            var types: [TensorType] = []
            if !resultNames.isEmpty {
                try expect(":")
                types.append(try parseType())
                while tok == .punct(",") { advance(); types.append(try parseType()) }
                guard types.count == resultNames.count else { throw err("'\(opName)' declares \(resultNames.count) results but \(types.count) types") }
            }
            var results: [Value] = []
            for (n, t) in zip(resultNames, types) {
                let v = f.newValue(t)
                if n.contains("#") {
                    // `%r:2` defines %r#0 and %r#1; the printer names them with consecutive numbers.
                    let base = Int(n.split(separator: "#")[0])!, idx = Int(n.split(separator: "#")[1])!
                    let (number, overflow) = base.addingReportingOverflow(idx)
                    guard !overflow else { throw err("result number %\(base) is too large") }
                    scope[String(number)] = v
                } else {
                    if scope[n] != nil { pos = opStart; throw err("value '%\(n)' is defined twice") }
                    scope[n] = v
                }
                results.append(v)
            }
            let range = SourceRange(file: file, start: toks[opStart].1, end: toks[max(opStart, pos - 1)].1 + 1)
            ops.append(Operation(op: kind, operands: operands, results: results, attrs: attrs, regions: regions, location: range))
        }
        return ops
    }
}
