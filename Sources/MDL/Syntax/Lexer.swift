/// Token kinds of the mdl language (docs/LANGUAGE.md, "Lexical structure").
enum TokenKind: Equatable {
    case identifier(String)
    case integer(Int)
    case float(Double)
    case string(String)
    case keyword(String)
    case symbol(String)
    case invalid          // a character that is not part of the language (already reported)
    case eof
}

struct Token {
    var kind: TokenKind
    var range: SourceRange
}

let keywords: Set<String> = [
    "import", "layer", "fn", "proc", "param", "state", "let", "var", "const",
    "for", "in", "loop", "if", "else", "true", "false", "minimize",
]

/// Longest symbols first so that `..` wins over `.`.
private let symbols: [String] = [
    "...", "**", "..", "->", "==", "!=", "<=", ">=", "&&", "||",
    "+", "-", "*", "/", "%", "@", "(", ")", "[", "]", "{", "}", ",", ":", ";", ".", "=", "<", ">", "!", "?",
]

/// Turns source bytes into tokens; bad characters are reported and skipped.
struct Lexer {
    let file: SourceFile
    let diags: DiagnosticEngine

    func tokenize() -> [Token] {
        let b = file.bytes
        var i = 0
        var out: [Token] = []
        func range(_ s: Int, _ e: Int) -> SourceRange { SourceRange(file: file, start: s, end: e) }
        while i < b.count {
            let c = b[i]
            if c == 32 || c == 9 || c == 10 || c == 13 { i += 1; continue }
            if c == UInt8(ascii: "/") && i + 1 < b.count && b[i + 1] == UInt8(ascii: "/") {
                while i < b.count && b[i] != 10 { i += 1 }
                continue
            }
            if c == UInt8(ascii: "/") && i + 1 < b.count && b[i + 1] == UInt8(ascii: "*") {
                let s = i
                i += 2
                var depth = 1
                while i < b.count && depth > 0 {
                    if b[i] == UInt8(ascii: "*") && i + 1 < b.count && b[i + 1] == UInt8(ascii: "/") { depth -= 1; i += 2 }
                    else if b[i] == UInt8(ascii: "/") && i + 1 < b.count && b[i + 1] == UInt8(ascii: "*") { depth += 1; i += 2 }
                    else { i += 1 }
                }
                if depth > 0 { diags.error("unterminated block comment", at: range(s, s + 2)) }
                continue
            }
            let s = i
            if isIdentStart(c) {
                while i < b.count && isIdentContinue(b[i]) { i += 1 }
                let text = String(decoding: b[s..<i], as: UTF8.self)
                out.append(Token(kind: keywords.contains(text) ? .keyword(text) : .identifier(text), range: range(s, i)))
                continue
            }
            if isDigit(c) {
                while i < b.count && (isDigit(b[i]) || b[i] == UInt8(ascii: "_")) { i += 1 }
                var isFloat = false
                // `1..3` is a range, not the float `1.`.
                if i + 1 < b.count && b[i] == UInt8(ascii: ".") && isDigit(b[i + 1]) {
                    isFloat = true
                    i += 1
                    while i < b.count && isDigit(b[i]) { i += 1 }
                }
                if i < b.count && (b[i] == UInt8(ascii: "e") || b[i] == UInt8(ascii: "E")) {
                    var j = i + 1
                    if j < b.count && (b[j] == UInt8(ascii: "+") || b[j] == UInt8(ascii: "-")) { j += 1 }
                    if j < b.count && isDigit(b[j]) {
                        isFloat = true
                        i = j
                        while i < b.count && isDigit(b[i]) { i += 1 }
                    }
                }
                let text = String(decoding: b[s..<i], as: UTF8.self).replacingOccurrences(of: "_", with: "")
                if isFloat {
                    out.append(Token(kind: .float(Double(text) ?? 0), range: range(s, i)))
                } else if let v = Int(text) {
                    out.append(Token(kind: .integer(v), range: range(s, i)))
                } else {
                    diags.error("integer literal '\(text)' is too large", at: range(s, i))
                    out.append(Token(kind: .integer(0), range: range(s, i)))
                }
                if i < b.count && isIdentStart(b[i]) {
                    let t = i
                    while i < b.count && isIdentContinue(b[i]) { i += 1 }
                    diags.error("invalid suffix '\(String(decoding: b[t..<i], as: UTF8.self))' on numeric literal", at: range(t, i))
                }
                continue
            }
            if c == UInt8(ascii: "\"") {
                i += 1
                var value = [UInt8]()
                var closed = false
                while i < b.count && b[i] != 10 {
                    if b[i] == UInt8(ascii: "\"") { closed = true; i += 1; break }
                    if b[i] == UInt8(ascii: "\\") && i + 1 < b.count {
                        let e = b[i + 1]
                        switch e {
                        case UInt8(ascii: "n"): value.append(10)
                        case UInt8(ascii: "t"): value.append(9)
                        case UInt8(ascii: "\\"), UInt8(ascii: "\""): value.append(e)
                        default: diags.error("unknown escape sequence '\\\(Character(UnicodeScalar(e)))'", at: range(i, i + 2))
                        }
                        i += 2
                        continue
                    }
                    value.append(b[i])
                    i += 1
                }
                if !closed { diags.error("unterminated string literal", at: range(s, s + 1)) }
                out.append(Token(kind: .string(String(decoding: value, as: UTF8.self)), range: range(s, i)))
                continue
            }
            var matched = false
            for sym in symbols {
                let u = Array(sym.utf8)
                if i + u.count <= b.count && Array(b[i..<i + u.count]) == u {
                    out.append(Token(kind: .symbol(sym), range: range(i, i + u.count)))
                    i += u.count
                    matched = true
                    break
                }
            }
            if matched { continue }
            // Skip a whole UTF-8 sequence so one bad character gives one error.
            var e = i + 1
            while e < b.count && (b[e] & 0xC0) == 0x80 { e += 1 }
            let text = String(decoding: b[i..<e], as: UTF8.self)
            diags.error("unexpected character '\(text)'", at: range(i, e))
            out.append(Token(kind: .invalid, range: range(i, e)))
            i = e
        }
        out.append(Token(kind: .eof, range: range(b.count, b.count)))
        return out
    }

    private func isDigit(_ c: UInt8) -> Bool { c >= 48 && c <= 57 }
    private func isIdentStart(_ c: UInt8) -> Bool { (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == 95 }
    private func isIdentContinue(_ c: UInt8) -> Bool { isIdentStart(c) || isDigit(c) }
}
