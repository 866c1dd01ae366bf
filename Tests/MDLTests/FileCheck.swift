/// A small FileCheck: `CHECK:` lines must match in order, `CHECK-NEXT:` on the next line,
/// `CHECK-SAME:` on the same line after the previous match, `CHECK-NOT:` nowhere between
/// two matches. Patterns are literal substrings. Returns the failures.
func fileCheck(_ output: String, checks: [(kind: String, pattern: String, line: Int)]) -> [String] {
    let lines = output.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    var failures: [String] = []
    var cursor = 0            // next line to search
    var lastLine = -1
    var lastEnd = 0           // column after the last match on lastLine
    var pendingNot: [(String, Int)] = []
    func checkNots(upTo end: Int) {
        for (p, l) in pendingNot {
            for i in max(0, lastLine + 1)..<min(end, lines.count) where lines[i].contains(p) {
                failures.append("line \(l): CHECK-NOT: '\(p)' found at output line \(i + 1): \(lines[i])")
            }
        }
        pendingNot = []
    }
    for c in checks {
        switch c.kind {
        case "CHECK-NOT":
            pendingNot.append((c.pattern, c.line))
        case "CHECK-SAME":
            guard lastLine >= 0, let r = lines[lastLine].range(of: c.pattern, range: lines[lastLine].index(lines[lastLine].startIndex, offsetBy: lastEnd)..<lines[lastLine].endIndex) else {
                failures.append("line \(c.line): CHECK-SAME: '\(c.pattern)' not found on output line \(lastLine + 1)")
                continue
            }
            lastEnd = lines[lastLine].distance(from: lines[lastLine].startIndex, to: r.upperBound)
        case "CHECK-NEXT":
            let i = lastLine + 1
            guard i < lines.count, let r = lines[i].range(of: c.pattern) else {
                failures.append("line \(c.line): CHECK-NEXT: '\(c.pattern)' is not on the line after the previous match (output line \(i + 1): \(i < lines.count ? lines[i] : "<end>"))")
                continue
            }
            checkNots(upTo: i)
            lastLine = i
            lastEnd = lines[i].distance(from: lines[i].startIndex, to: r.upperBound)
            cursor = i + 1
        default:
            var found = false
            for i in cursor..<lines.count {
                if let r = lines[i].range(of: c.pattern) {
                    checkNots(upTo: i)
                    lastLine = i
                    lastEnd = lines[i].distance(from: lines[i].startIndex, to: r.upperBound)
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
