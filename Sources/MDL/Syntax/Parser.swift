/// Recursive-descent parser with error recovery: every syntax error in a file is reported.
struct Parser {
    private var tokens: [Token]
    private var newlineBefore: [Bool]
    private var pos = 0
    private let file: SourceFile
    private let diags: DiagnosticEngine
    private var nesting = 0          // parentheses/brackets open around the current token
    private var depth = 0            // recursion depth, bounded so hostile input cannot overflow the stack
    private static let maxDepth = 120
    private var lastErrorOffset = -1
    private var reportedDeepNesting = false

    init(file: SourceFile, diags: DiagnosticEngine) {
        self.file = file
        self.diags = diags
        tokens = Lexer(file: file, diags: diags).tokenize()
        newlineBefore = []
        var prevEnd = 0
        for t in tokens {
            newlineBefore.append(file.bytes[prevEnd..<t.range.start].contains(10))
            prevEnd = t.range.end
        }
    }

    // MARK: token helpers

    private var tok: Token { tokens[pos] }
    private var atEOF: Bool { if case .eof = tok.kind { return true }; return false }
    private func isSymbol(_ s: String) -> Bool { if case .symbol(s) = tok.kind { return true }; return false }
    private func isKeyword(_ s: String) -> Bool { if case .keyword(s) = tok.kind { return true }; return false }
    private func peekIsSymbol(_ s: String, _ k: Int = 1) -> Bool {
        guard pos + k < tokens.count else { return false }
        if case .symbol(s) = tokens[pos + k].kind { return true }
        return false
    }
    private func peekIsIdentifier() -> Bool {
        guard pos + 1 < tokens.count else { return false }
        if case .identifier = tokens[pos + 1].kind { return true }
        return false
    }
    private var identifier: String? { if case .identifier(let s) = tok.kind { return s }; return nil }
    private mutating func advance() { if pos < tokens.count - 1 { pos += 1 } }
    private var previousEnd: Int { pos > 0 ? tokens[pos - 1].range.end : 0 }
    private func range(from start: Int) -> SourceRange { SourceRange(file: file, start: start, end: max(start, previousEnd)) }

    private func describe(_ t: Token) -> String {
        switch t.kind {
        case .identifier(let s): return "identifier '\(s)'"
        case .integer(let v): return "integer '\(v)'"
        case .float: return "number '\(t.range.snippet)'"
        case .string: return "string literal"
        case .keyword(let k): return "keyword '\(k)'"
        case .symbol(let s): return "'\(s)'"
        case .invalid: return "'\(t.range.snippet)'"
        case .eof: return "end of file"
        }
    }

    /// Expects `closer`; when it is missing, skips to it unless an enclosing construct's closer
    /// (or, when `lineEnds`, the end of the line) comes first.
    private mutating func close(_ closer: String, _ context: String, lineEnds: Bool) {
        if expect(closer, context) { return }
        if atCloser && !isSymbol(closer) { return }
        while !atCloser && !(lineEnds && newlineBefore[pos]) { advance() }
        if isSymbol(closer) { advance() }
    }

    /// Declarations, members and statements end at a new line, ';' or '}'. After an item that
    /// already had an error, the parser resynchronizes quietly.
    private mutating func endItem(_ what: String, errorsBefore: Int, topLevel: Bool = false) {
        guard !atEOF, !newlineBefore[pos], !isSymbol(";"), topLevel || !isSymbol("}") else { return }
        if diags.diagnostics.count == errorsBefore {
            error("expected a new line or ';' after the \(what), found \(describe(tok))")
        }
        synchronize(stopAtCloseBrace: !topLevel)
    }

    /// True at a token that closes an enclosing construct, where recovery must stop.
    private var atCloser: Bool { isSymbol(")") || isSymbol("]") || isSymbol("}") || atEOF }

    /// After the nesting limit: skips the rest of the nested construct, keeping brackets balanced
    /// (through the closer of an already opened block when `opened`), so one error is reported.
    private mutating func skipNested(opened: Bool) {
        var balance = opened ? 1 : 0
        while !atEOF {
            if isSymbol("(") || isSymbol("[") || isSymbol("{") { balance += 1 }
            else if isSymbol(")") || isSymbol("]") || isSymbol("}") {
                if balance == 0 { return }
                balance -= 1
                if balance == 0 && opened { advance(); return }
            }
            advance()
        }
    }

    private mutating func tooDeep() -> Bool {
        guard depth > Parser.maxDepth else { return false }
        if !reportedDeepNesting {
            error("nested too deeply (more than \(Parser.maxDepth) levels of expressions and blocks)")
            reportedDeepNesting = true
        }
        return true
    }

    private mutating func error(_ message: String, at r: SourceRange? = nil) {
        let r = r ?? tok.range
        // One error per position: recovery must not produce a cascade at the same token.
        if r.start == lastErrorOffset { return }
        // After the nesting limit, errors deep inside the abandoned construct are consequences of it.
        if reportedDeepNesting && depth > Parser.maxDepth / 2 { return }
        lastErrorOffset = r.start
        diags.error(message, at: r)
    }

    @discardableResult
    private mutating func expect(_ s: String, _ context: String) -> Bool {
        if isSymbol(s) {
            advance()
            return true
        }
        error("expected '\(s)' \(context), found \(describe(tok))")
        return false
    }

    private mutating func expectIdentifier(_ context: String) -> String {
        if let s = identifier {
            advance()
            return s
        }
        if case .keyword(let k) = tok.kind {
            error("'\(k)' is a keyword and cannot be used as \(context)")
            advance()
            return k
        }
        error("expected \(context), found \(describe(tok))")
        return "<error>"
    }

    /// Skips to a token that can start a declaration or statement, keeping brackets balanced.
    private mutating func synchronize(stopAtCloseBrace: Bool = true) {
        var balance = 0
        let start = pos
        while !atEOF {
            if pos > start && newlineBefore[pos] && balance == 0 { return }
            switch tok.kind {
            case .symbol("(" ), .symbol("["), .symbol("{"): balance += 1
            case .symbol(")"), .symbol("]"): balance = max(0, balance - 1)
            case .symbol("}"):
                if balance == 0 { if stopAtCloseBrace { return } }
                balance = max(0, balance - 1)
            case .symbol(";") where balance == 0:
                advance()
                return
            case .keyword(let k) where balance == 0 && pos > start &&
                ["let", "var", "for", "loop", "fn", "proc", "layer", "param", "state", "import", "minimize", "const"].contains(k):
                return
            default: break
            }
            advance()
        }
    }

    // MARK: declarations

    mutating func parseFile() -> SourceModule {
        var decls: [Decl] = []
        while !atEOF {
            let before = pos
            let errorsBefore = diags.diagnostics.count
            if let d = parseDecl() { decls.append(d) }
            if pos == before { advance() }
            endItem("declaration", errorsBefore: errorsBefore, topLevel: true)
        }
        return SourceModule(file: file, decls: decls)
    }

    private mutating func parseDecl() -> Decl? {
        let start = tok.range.start
        reportedDeepNesting = false
        switch tok.kind {
        case .keyword("import"):
            advance()
            var path = [expectIdentifier("a module name after 'import'")]
            while isSymbol(".") {
                advance()
                path.append(expectIdentifier("a module name"))
            }
            return .importDecl(path: path, range: range(from: start))
        case .keyword("layer"):
            advance()
            return .layer(parseLayer(start: start))
        case .identifier("model") where peekIsIdentifier():
            advance()
            return .layer(parseLayer(start: start))
        case .keyword("fn"), .keyword("proc"):
            let isProc = isKeyword("proc")
            advance()
            return .function(parseFunction(start: start, isProc: isProc))
        case .keyword("const"), .keyword("let"):
            advance()
            let name = expectIdentifier("a name")
            expect("=", "after the name of a top-level binding")
            let value = parseExpr()
            return .constant(name: name, value: value, range: range(from: start))
        case .identifier("train") where peekIsSymbol("{"):
            advance()
            return parseTrain(start: start)
        case .symbol(";"):
            advance()
            return nil
        default:
            error("expected a declaration ('import', 'layer', 'model', 'fn', 'proc', 'let', 'const' or 'train'), found \(describe(tok))")
            synchronize(stopAtCloseBrace: false)
            if isSymbol("}") { advance() }
            return nil
        }
    }

    private mutating func parseParams(_ context: String) -> [ParamDecl] {
        var params: [ParamDecl] = []
        guard expect("(", context) else { return params }
        nesting += 1
        defer { nesting -= 1 }
        while !isSymbol(")") && !atEOF && !isSymbol("{") {
            let before = pos
            defer { if pos == before { advance() } }
            let start = tok.range.start
            let name = expectIdentifier("a parameter name")
            var type: TypeExpr?
            var def: Expr?
            if isSymbol(":") {
                advance()
                type = parseType()
            }
            if isSymbol("=") {
                advance()
                def = parseExpr()
            }
            params.append(ParamDecl(name: name, type: type, defaultValue: def, range: range(from: start)))
            if isSymbol(",") { advance() } else if !isSymbol(")") {
                error("expected ',' or ')' in parameter list, found \(describe(tok))")
                while !isSymbol(")") && !isSymbol("{") && !atEOF { advance() }
            }
        }
        expect(")", "to close the parameter list")
        return params
    }

    private mutating func parseLayer(start: Int) -> LayerDecl {
        let name = expectIdentifier("a layer name")
        let params = isSymbol("(") ? parseParams("after the layer name") : []
        let members = parseMembers()
        return LayerDecl(name: name, params: params, members: members, range: range(from: start))
    }

    private mutating func parseMembers() -> [Member] {
        var members: [Member] = []
        guard expect("{", "to open the layer body") else { synchronize(); return members }
        while !isSymbol("}") && !atEOF {
            let before = pos
            let errorsBefore = diags.diagnostics.count
            if let m = parseMember() { members.append(m) }
            if pos == before { advance() }
            endItem("member", errorsBefore: errorsBefore)
        }
        expect("}", "to close the layer body")
        return members
    }

    private mutating func parseMember() -> Member? {
        let start = tok.range.start
        switch tok.kind {
        case .keyword("param"), .keyword("state"):
            let isParam = isKeyword("param")
            advance()
            let name = expectIdentifier("a \(isParam ? "parameter" : "state") name")
            expect(":", "before the type of '\(name)'")
            let type = parseType()
            expect("=", "before the initializer of '\(name)'")
            let initializer = parseExpr()
            return isParam ? .param(name: name, type: type, initializer: initializer, range: range(from: start))
                           : .state(name: name, type: type, initializer: initializer, range: range(from: start))
        case .keyword("fn"), .keyword("proc"):
            let isProc = isKeyword("proc")
            advance()
            return .function(parseFunction(start: start, isProc: isProc))
        case .keyword("if"):
            advance()
            let cond = parseExpr()
            let then = parseMembers()
            var otherwise: [Member] = []
            if isKeyword("else") {
                advance()
                if isKeyword("if") {
                    if let m = parseMember() { otherwise = [m] }
                } else {
                    otherwise = parseMembers()
                }
            }
            return .conditional(condition: cond, then: then, otherwise: otherwise, range: range(from: start))
        case .identifier(let name) where peekIsSymbol("="):
            advance()
            advance()
            let value = parseExpr()
            return .field(name: name, value: value, range: range(from: start))
        case .symbol(";"):
            advance()
            return nil
        default:
            error("expected a layer member ('param', 'state', 'fn', 'if' or 'name = ...'), found \(describe(tok))")
            synchronize()
            return nil
        }
    }

    private mutating func parseFunction(start: Int, isProc: Bool) -> FnDecl {
        let name = expectIdentifier("a function name")
        let params = parseParams("after the function name")
        var result: TypeExpr?
        if isSymbol("->") {
            advance()
            result = parseType()
        }
        let body = parseBlock("to open the function body")
        return FnDecl(name: name, params: params, result: result, body: body, isProc: isProc, range: range(from: start))
    }

    private mutating func parseTrain(start: Int) -> Decl {
        var items: [TrainItem] = []
        guard expect("{", "after 'train'") else { synchronize(); return .train(items: items, range: range(from: start)) }
        while !isSymbol("}") && !atEOF {
            let s = tok.range.start
            let before = pos
            switch tok.kind {
            case .identifier("step") where peekIsSymbol("(") || peekIsSymbol("{"):
                advance()
                var batch = "batch"
                if isSymbol("(") {
                    advance()
                    batch = expectIdentifier("the batch name")
                    expect(")", "after the batch name")
                }
                let body = parseBlock("to open the step body")
                items.append(.step(batch: batch, body: body, range: range(from: s)))
            case .identifier("eval") where !peekIsSymbol("="):
                advance()
                var split: Expr?
                var batch: String?
                if identifier == "on" {
                    advance()
                    split = parseExpr(noCall: true)
                }
                if isSymbol("(") {
                    advance()
                    batch = expectIdentifier("the batch name")
                    expect(")", "after the batch name")
                }
                let body = parseBlock("to open the eval body")
                items.append(.eval(split: split, batch: batch, body: body, range: range(from: s)))
            case .identifier(let name):
                let errorsBefore = diags.diagnostics.count
                advance()
                expect("=", "after the recipe setting '\(name)'")
                let value = parseExpr()
                items.append(.setting(name: name, value: value, range: range(from: s)))
                if isSymbol(",") || isSymbol(";") { advance() } else { endItem("recipe setting", errorsBefore: errorsBefore) }
            case .symbol(";"), .symbol(","):
                advance()
            default:
                error("expected a recipe setting ('name = value'), 'step' or 'eval', found \(describe(tok))")
                synchronize()
            }
            if pos == before { advance() }
        }
        expect("}", "to close the train block")
        return .train(items: items, range: range(from: start))
    }

    // MARK: types

    mutating func parseType() -> TypeExpr {
        let start = tok.range.start
        if isSymbol("(") {
            advance()
            nesting += 1
            var elements: [TypeExpr] = []
            while !isSymbol(")") && !atEOF {
                elements.append(parseType())
                if isSymbol(",") { advance() } else { break }
            }
            nesting -= 1
            expect(")", "to close the tuple type")
            return TypeExpr(name: "tuple", dims: nil, elements: elements, range: range(from: start))
        }
        let name = expectIdentifier("a type")
        var dims: [DimExpr]?
        if isSymbol("[") && !newlineBefore[pos] {
            advance()
            nesting += 1
            var ds: [DimExpr] = []
            var closed = false
            while !isSymbol("]") && !atEOF {
                let before = pos
                defer { if pos == before && !closed { advance() } }
                if isSymbol("...") {
                    advance()
                    var label: String?
                    if let id = identifier { label = id; advance() }
                    ds.append(.rest(label))
                } else if identifier == "_" {
                    advance()
                    ds.append(.any)
                } else {
                    ds.append(.expr(parseExpr()))
                }
                if isSymbol(",") { advance() } else if !isSymbol("]") {
                    error("expected ',' or ']' in tensor shape, found \(describe(tok))")
                    // A token that cannot be part of a size ends the shape; the rest of the signature parses on.
                    if atCloser || isSymbol("{") || isSymbol("->") || isSymbol("=") || isSymbol(",") { closed = true; break }
                    while !isSymbol("]") && !atCloser && !isSymbol("{") && !isSymbol("->") { advance() }
                    if !isSymbol("]") { closed = true; break }
                }
            }
            nesting -= 1
            if !closed { expect("]", "to close the tensor shape") }
            dims = ds
        }
        return TypeExpr(name: name, dims: dims, elements: nil, range: range(from: start))
    }

    // MARK: statements

    mutating func parseBlock(_ context: String) -> CodeBlock {
        let start = tok.range.start
        var stmts: [Stmt] = []
        guard expect("{", context) else {
            synchronize()
            return CodeBlock(statements: [], range: range(from: start))
        }
        let savedNesting = nesting
        nesting = 0
        depth += 1
        defer { depth -= 1; nesting = savedNesting }
        if tooDeep() {
            skipNested(opened: true)
            return CodeBlock(statements: [], range: range(from: start), isMalformed: true)
        }
        let errorsBefore = diags.diagnostics.count
        while !isSymbol("}") && !atEOF {
            let before = pos
            if let s = parseStatement() { stmts.append(s) }
            if pos == before { advance() }
        }
        expect("}", "to close the block")
        return CodeBlock(statements: stmts, range: range(from: start), isMalformed: diags.diagnostics.count > errorsBefore)
    }

    private mutating func parseStatement() -> Stmt? {
        let errorsBefore = diags.diagnostics.count
        let stmt = parseStatementBody()
        if stmt != nil || diags.diagnostics.count > errorsBefore { endItem("statement", errorsBefore: errorsBefore) }
        return stmt
    }

    private mutating func parseStatementBody() -> Stmt? {
        let start = tok.range.start
        switch tok.kind {
        case .keyword("let"), .keyword("var"):
            let isVar = isKeyword("var")
            advance()
            var names: [String] = []
            if isSymbol("(") {
                advance()
                while !isSymbol(")") && !atEOF {
                    names.append(expectIdentifier("a name in the pattern"))
                    if isSymbol(",") { advance() } else { break }
                }
                expect(")", "to close the pattern")
            } else {
                names = [expectIdentifier("a name after '\(isVar ? "var" : "let")'")]
            }
            guard expect("=", "after the name in a binding") else { synchronize(); return nil }
            let value = parseExpr()
            return .binding(isVar: isVar, names: names, value: value, range: range(from: start))
        case .keyword("for"), .keyword("loop"):
            let isLoop = isKeyword("loop")
            advance()
            let variable = expectIdentifier("a loop variable")
            guard isKeyword("in") else {
                error("expected 'in' after the loop variable, found \(describe(tok))")
                synchronize()
                return nil
            }
            advance()
            let seq = parseExpr()
            let body = parseBlock("to open the loop body")
            return isLoop ? .loop(variable: variable, sequence: seq, body: body, range: range(from: start))
                          : .forLoop(variable: variable, sequence: seq, body: body, range: range(from: start))
        case .keyword("minimize"):
            advance()
            let opt = parsePostfix()
            guard expect(":", "after the optimizer in 'minimize'") else { synchronize(); return nil }
            let loss = parseExpr()
            return .minimize(optimizer: opt, loss: loss, range: range(from: start))
        case .keyword("if"):
            let e = parseExpr()
            if case .conditional(let c, let t, let o) = e.kind {
                return .conditional(condition: c, then: t, otherwise: o.statements.isEmpty && o.range.start == o.range.end ? nil : o, range: e.range)
            }
            return .expr(e)
        case .symbol(";"):
            advance()
            return nil
        default:
            let e = parseExpr()
            if case .error = e.kind {
                synchronize()
                return .expr(e)   // keeps the block's value unknown, so no follow-up error uses it
            }
            if isSymbol("=") {
                advance()
                let value = parseExpr()
                switch e.kind {
                case .name, .member: return .assign(target: e, value: value, range: range(from: start))
                default:
                    error("cannot assign to this expression; only names and state members can be assigned", at: e.range)
                    return nil
                }
            }
            return .expr(e)
        }
    }

    // MARK: expressions

    private static let precedence: [String: Int] = [
        "||": 1, "&&": 2,
        "==": 3, "!=": 3, "<": 3, "<=": 3, ">": 3, ">=": 3,
        "..": 4,
        "+": 5, "-": 5,
        "*": 6, "/": 6, "%": 6, "@": 6,
    ]

    /// `noCall`: a `(` ends the expression (the split of `eval on data.test (b)`).
    mutating func parseExpr(noCall: Bool = false) -> Expr {
        depth += 1
        defer { depth -= 1 }
        if tooDeep() {
            let r = tok.range
            skipNested(opened: false)
            return Expr(.error, r)
        }
        return parseBinary(minPrec: 1, noCall: noCall)
    }

    private mutating func parseBinary(minPrec: Int, noCall: Bool) -> Expr {
        var lhs = parseUnary(noCall: noCall)
        while true {
            if case .invalid = tok.kind, nesting > 0 || !newlineBefore[pos] {
                // `a $ b`: the character was reported by the lexer; treat it as an unknown operator.
                advance()
                let rhs = parseBinary(minPrec: 7, noCall: noCall)
                lhs = Expr(.error, lhs.range.to(rhs.range))
                continue
            }
            guard case .symbol(let op) = tok.kind, let prec = Parser.precedence[op], prec >= minPrec else { break }
            if nesting == 0 && newlineBefore[pos] { break }
            advance()
            let rhs = parseBinary(minPrec: prec + 1, noCall: noCall)
            let r = lhs.range.to(rhs.range)
            lhs = op == ".." ? Expr(.range(lhs, rhs), r) : Expr(.binary(op, lhs, rhs), r)
        }
        return lhs
    }

    private mutating func parseUnary(noCall: Bool) -> Expr {
        let start = tok.range.start
        if isSymbol("-") || isSymbol("!") {
            let op = isSymbol("-") ? "-" : "!"
            advance()
            depth += 1
            defer { depth -= 1 }
            if tooDeep() {
                let r = tok.range
                skipNested(opened: false)
                return Expr(.error, r)
            }
            let operand = parseUnary(noCall: noCall)
            return Expr(.unary(op, operand), range(from: start))
        }
        let base = parsePostfix(noCall: noCall)
        if isSymbol("**") && (nesting > 0 || !newlineBefore[pos]) {
            advance()
            let exponent = parseUnary(noCall: noCall) // right-associative, binds tighter than unary minus on the left
            return Expr(.binary("**", base, exponent), base.range.to(exponent.range))
        }
        return base
    }

    private mutating func parsePostfix(noCall: Bool = false) -> Expr {
        var e = parsePrimary()
        while true {
            if nesting == 0 && newlineBefore[pos] { break }
            if isSymbol(".") {
                advance()
                let name = expectIdentifier("a member name after '.'")
                e = Expr(.member(e, name), range(from: e.range.start))
            } else if isSymbol("(") && !noCall {
                advance()
                nesting += 1
                var args: [Argument] = []
                while !isSymbol(")") && !atEOF {
                    let s = tok.range.start
                    var label: String?
                    if identifier != nil && peekIsSymbol("=") && !peekIsSymbol("==") {
                        label = identifier
                        advance()
                        advance()
                    }
                    let v = parseExpr()
                    args.append(Argument(label: label, value: v, range: range(from: s)))
                    if case .error = v.kind { break }
                    if isSymbol(",") { advance() } else if !isSymbol(")") {
                        error("expected ',' or ')' in argument list, found \(describe(tok))")
                        break
                    }
                }
                nesting -= 1
                close(")", "to close the argument list", lineEnds: nesting == 0)
                e = Expr(.call(e, args), range(from: e.range.start))
            } else if isSymbol("[") {
                advance()
                nesting += 1
                var items: [IndexItem] = []
                while !isSymbol("]") && !atEOF {
                    items.append(parseIndexItem())
                    if isSymbol(",") { advance() } else if !isSymbol("]") {
                        error("expected ',' or ']' in subscript, found \(describe(tok))")
                        break
                    }
                }
                nesting -= 1
                close("]", "to close the subscript", lineEnds: nesting == 0)
                e = Expr(.index(e, items), range(from: e.range.start))
            } else {
                break
            }
        }
        return e
    }

    private mutating func parseIndexItem() -> IndexItem {
        if isSymbol("...") { advance(); return .ellipsis }
        var lo: Expr?
        if !isSymbol(":") { lo = parseExpr() }
        guard isSymbol(":") else { return .single(lo ?? Expr(.error, tok.range)) }
        advance()
        var hi: Expr?, step: Expr?
        if !isSymbol(":") && !isSymbol(",") && !isSymbol("]") { hi = parseExpr() }
        if isSymbol(":") {
            advance()
            if !isSymbol(",") && !isSymbol("]") { step = parseExpr() }
        }
        return .slice(lo, hi, step)
    }

    private mutating func parsePrimary() -> Expr {
        let t = tok
        let start = t.range.start
        switch t.kind {
        case .invalid: advance(); return Expr(.error, t.range)
        case .integer(let v): advance(); return Expr(.int(v), t.range)
        case .float(let v): advance(); return Expr(.float(v), t.range)
        case .string(let s): advance(); return Expr(.string(s), t.range)
        case .keyword("true"): advance(); return Expr(.bool(true), t.range)
        case .keyword("false"): advance(); return Expr(.bool(false), t.range)
        case .identifier(let name):
            advance()
            // A tensor type used as a value, e.g. the argument of `zeros(f32[B, 3])`.
            if ["f32", "i32", "bool"].contains(name) && isSymbol("[") && !newlineBefore[pos] {
                pos -= 1
                let type = parseType()
                return Expr(.typeLiteral(type), type.range)
            }
            return Expr(.name(name), t.range)
        case .keyword("if"):
            advance()
            let cond = parseExpr()
            let then = parseBlock("after the condition of 'if'")
            var otherwise = CodeBlock(statements: [], range: SourceRange(file: file, start: previousEnd, end: previousEnd))
            if isKeyword("else") {
                advance()
                if isKeyword("if") {
                    let nested = parsePrimary()
                    otherwise = CodeBlock(statements: [.expr(nested)], range: nested.range)
                } else {
                    otherwise = parseBlock("after 'else'")
                }
            }
            return Expr(.conditional(cond, then, otherwise), range(from: start))
        case .symbol("("):
            advance()
            nesting += 1
            defer { nesting -= 1 }
            if isSymbol(")") {
                advance()
                return Expr(.tuple([]), range(from: start))
            }
            if identifier != nil && peekIsSymbol("=") {
                var fields: [(String, Expr)] = []
                while !isSymbol(")") && !atEOF {
                    let name = expectIdentifier("a field name")
                    expect("=", "after the field name '\(name)'")
                    fields.append((name, parseExpr()))
                    if isSymbol(",") { advance() } else { break }
                }
                expect(")", "to close the record")
                return Expr(.record(fields), range(from: start))
            }
            let first = parseExpr()
            if isSymbol(",") {
                var elements = [first]
                while isSymbol(",") {
                    advance()
                    if isSymbol(")") { break }
                    elements.append(parseExpr())
                }
                expect(")", "to close the tuple")
                return Expr(.tuple(elements), range(from: start))
            }
            expect(")", "to close the parenthesized expression")
            return Expr(first.kind, range(from: start))
        case .symbol("["):
            advance()
            nesting += 1
            defer { nesting -= 1 }
            var elements: [Expr] = []
            while !isSymbol("]") && !atEOF {
                let e = parseExpr()
                elements.append(e)
                if case .error = e.kind { break }
                if isKeyword("for") && elements.count == 1 {
                    advance()
                    let v = expectIdentifier("a loop variable")
                    if isKeyword("in") { advance() } else { error("expected 'in' in the list comprehension, found \(describe(tok))") }
                    let seq = parseExpr()
                    expect("]", "to close the list comprehension")
                    return Expr(.comprehension(e, v, seq), range(from: start))
                }
                if isSymbol(",") { advance() } else if !isSymbol("]") {
                    error("expected ',' or ']' in list, found \(describe(tok))")
                    break
                }
            }
            close("]", "to close the list", lineEnds: nesting <= 1)
            return Expr(.list(elements), range(from: start))
        default:
            error("expected an expression, found \(describe(t))")
            if !atEOF && !isSymbol("}") && !isSymbol(")") && !isSymbol("]") { advance() }
            return Expr(.error, t.range)
        }
    }
}
