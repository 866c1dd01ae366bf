import Foundation

/// A pattern: literal text with `{{regex}}` parts, as in LLVM's FileCheck.
struct CheckPattern {
    let regex: NSRegularExpression
    init(_ text: String) {
        var out = ""
        var rest = Substring(text)
        while let open = rest.range(of: "{{") {
            out += NSRegularExpression.escapedPattern(for: String(rest[..<open.lowerBound]))
            guard let close = rest[open.upperBound...].range(of: "}}") else { break }
            out += "(?:" + rest[open.upperBound..<close.lowerBound] + ")"
            rest = rest[close.upperBound...]
        }
        out += NSRegularExpression.escapedPattern(for: String(rest))
        // An invalid regex never matches, so the CHECK fails visibly.
        regex = (try? NSRegularExpression(pattern: out)) ?? (try! NSRegularExpression(pattern: "(?!)"))
    }
    /// The match in `line` at or after character offset `from`, as a character range.
    func match(_ line: String, from: Int = 0) -> Range<Int>? {
        let ns = line as NSString
        let start = (String(line.prefix(from)) as NSString).length
        let r = regex.rangeOfFirstMatch(in: line, range: NSRange(location: start, length: ns.length - start))
        guard r.location != NSNotFound, let range = Range(r, in: line) else { return nil }
        return line.distance(from: line.startIndex, to: range.lowerBound)..<line.distance(from: line.startIndex, to: range.upperBound)
    }
}

/// A small FileCheck: `CHECK:` lines must match in order, `CHECK-NEXT:` on the next line,
/// `CHECK-SAME:` on the same line after the previous match, `CHECK-NOT:` nowhere between
/// two matches. Returns the failures.
func fileCheck(_ output: String, checks: [(kind: String, pattern: String, line: Int)]) -> [String] {
    let lines = output.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    var failures: [String] = []
    var cursor = 0            // next line to search
    var lastLine = -1
    var lastEnd = 0           // column after the last match on lastLine
    var pendingNot: [(String, Int)] = []
    func checkNots(upTo end: Int) {
        for (p, l) in pendingNot {
            let pattern = CheckPattern(p)
            for i in max(0, lastLine + 1)..<min(end, lines.count) where pattern.match(lines[i]) != nil {
                failures.append("line \(l): CHECK-NOT: '\(p)' found at output line \(i + 1): \(lines[i])")
            }
        }
        pendingNot = []
    }
    for c in checks {
        let pattern = CheckPattern(c.pattern)
        switch c.kind {
        case "CHECK-NOT":
            pendingNot.append((c.pattern, c.line))
        case "CHECK-SAME":
            guard lastLine >= 0, let r = pattern.match(lines[lastLine], from: lastEnd) else {
                failures.append("line \(c.line): CHECK-SAME: '\(c.pattern)' not found on output line \(lastLine + 1)")
                continue
            }
            lastEnd = r.upperBound
        case "CHECK-NEXT":
            let i = lastLine + 1
            guard i < lines.count, let r = pattern.match(lines[i]) else {
                failures.append("line \(c.line): CHECK-NEXT: '\(c.pattern)' is not on the line after the previous match (output line \(i + 1): \(i < lines.count ? lines[i] : "<end>"))")
                continue
            }
            checkNots(upTo: i)
            lastLine = i
            lastEnd = r.upperBound
            cursor = i + 1
        default:
            var found = false
            for i in cursor..<lines.count {
                if let r = pattern.match(lines[i]) {
                    checkNots(upTo: i)
                    lastLine = i
                    lastEnd = r.upperBound
                    cursor = i + 1
                    found = true
                    break
                }
            }
            if !found { failures.append("line \(c.line): CHECK: '\(c.pattern)' not found after output line \(lastLine + 1)") }
        }
    }
    checkNots(upTo: lines.count)
    return failures
}

/// The `// CHECK...:` directives of a test file.
func checkDirectives(_ text: String) -> [(kind: String, pattern: String, line: Int)] {
    var out: [(String, String, Int)] = []
    for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
        for kind in ["CHECK-NEXT", "CHECK-SAME", "CHECK-NOT", "CHECK"] {
            if let r = line.range(of: "// \(kind): ") {
                out.append((kind, String(line[r.upperBound...]).trimmingCharacters(in: .whitespaces), n + 1))
                break
            }
        }
    }
    return out
}
