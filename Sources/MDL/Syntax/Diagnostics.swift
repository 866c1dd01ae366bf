import Foundation

/// A source file held in memory; locations index into its UTF-8 bytes.
public final class SourceFile {
    public let path: String
    public let text: String
    let bytes: [UInt8]
    private var lineStarts: [Int] = []

    public init(path: String, text: String) {
        self.path = path
        self.text = text
        self.bytes = Array(text.utf8)
        lineStarts = [0]
        for (i, b) in bytes.enumerated() where b == UInt8(ascii: "\n") { lineStarts.append(i + 1) }
    }

    /// 1-based line and column of a byte offset.
    func lineColumn(_ offset: Int) -> (line: Int, column: Int) {
        var lo = 0, hi = lineStarts.count - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if lineStarts[mid] <= offset { lo = mid } else { hi = mid - 1 }
        }
        return (lo + 1, offset - lineStarts[lo] + 1)
    }

    func lineText(_ line: Int) -> String {
        let start = lineStarts[line - 1]
        var end = start
        while end < bytes.count && bytes[end] != UInt8(ascii: "\n") { end += 1 }
        return String(decoding: bytes[start..<end], as: UTF8.self)
    }
}

/// A half-open byte range in one source file.
public struct SourceRange: Sendable {
    public var file: SourceFile?
    public var start: Int
    public var end: Int
    public static let unknown = SourceRange(file: nil, start: 0, end: 0)
    public init(file: SourceFile?, start: Int, end: Int) { self.file = file; self.start = start; self.end = end }
    func to(_ other: SourceRange) -> SourceRange { SourceRange(file: file, start: start, end: max(end, other.end)) }
    /// The source text the range covers.
    var snippet: String {
        guard let f = file, start <= end, end <= f.bytes.count else { return "" }
        return String(decoding: f.bytes[start..<end], as: UTF8.self)
    }
}

extension SourceFile: @unchecked Sendable {}

public struct Diagnostic: Sendable {
    public enum Severity: String, Sendable { case error, warning, note }
    public var severity: Severity
    public var message: String
    public var range: SourceRange

    /// `file:line:col: error: message`, the source line, and a caret under the range.
    public func render(withSource: Bool = true) -> String {
        guard let f = range.file else { return "\(severity.rawValue): \(message)" }
        let (line, col) = f.lineColumn(range.start)
        var out = "\(f.path):\(line):\(col): \(severity.rawValue): \(message)"
        if withSource {
            let text = f.lineText(line)
            let (endLine, endCol) = f.lineColumn(max(range.start, range.end - 1))
            let width = endLine == line ? max(1, endCol - col + 1) : 1
            out += "\n" + text + "\n" + String(repeating: " ", count: col - 1) + "^" + String(repeating: "~", count: width - 1)
        }
        return out
    }

    public var location: (line: Int, column: Int)? { range.file.map { $0.lineColumn(range.start) } }
}

/// Collects every diagnostic of a compilation so all of them are reported at once.
public final class DiagnosticEngine: @unchecked Sendable {
    public private(set) var diagnostics: [Diagnostic] = []
    public init() {}
    public var hasErrors: Bool { diagnostics.contains { $0.severity == .error } }
    public func error(_ message: String, at range: SourceRange) {
        // The same message at the same place is reported once (e.g. a layer instantiated twice).
        if diagnostics.contains(where: { $0.message == message && $0.range.start == range.start && $0.range.file === range.file }) { return }
        diagnostics.append(Diagnostic(severity: .error, message: message, range: range))
    }
    public func note(_ message: String, at range: SourceRange) {
        diagnostics.append(Diagnostic(severity: .note, message: message, range: range))
    }
    /// All diagnostics in source order (file, then position), each with its source line.
    public func render() -> String {
        let ordered = diagnostics.enumerated().sorted { a, b in
            let (fa, fb) = (a.element.range.file?.path ?? "", b.element.range.file?.path ?? "")
            if fa != fb { return fa < fb }
            if a.element.range.start != b.element.range.start { return a.element.range.start < b.element.range.start }
            return a.offset < b.offset
        }
        return ordered.map { $0.element.render() }.joined(separator: "\n")
    }
}

/// Edit distance, for "did you mean" suggestions.
func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var prev = Array(0...b.count), cur = [Int](repeating: 0, count: b.count + 1)
    for i in 1...a.count {
        cur[0] = i
        for j in 1...b.count {
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        swap(&prev, &cur)
    }
    return prev[b.count]
}

/// The closest candidate within a small edit distance, formatted as a suggestion suffix.
func suggestion(for name: String, among candidates: [String]) -> String {
    var best: (String, Int)?
    for c in candidates where c != name && !c.isEmpty {
        let d = editDistance(name, c)
        // A one-letter name is one edit from every other one-letter name: no suggestion then.
        if d <= max(1, min(3, name.count / 3 + 1)), d < name.count || name.lowercased() == c.lowercased(), best == nil || d < best!.1 || (d == best!.1 && c < best!.0) { best = (c, d) }
    }
    return best.map { "; did you mean '\($0.0)'?" } ?? ""
}
