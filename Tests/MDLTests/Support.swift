import Foundation
import XCTest
@testable import MDL

/// Paths of the source tree the tests run from.
enum Repo {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let models = root.appendingPathComponent("Models")
    static let inputs = root.appendingPathComponent("Tests/MDLTests/Inputs")

    /// Every model of the zoo (Models/*.mdl, not the standard library).
    static var modelFiles: [URL] {
        let files = (try? FileManager.default.contentsOfDirectory(at: models, includingPropertiesForKeys: nil)) ?? []
        return files.filter { $0.pathExtension == "mdl" }.sorted { $0.path < $1.path }
    }
    static func files(in folder: String, ext: String = "mdl") -> [URL] {
        let dir = inputs.appendingPathComponent(folder)
        let files = (try? FileManager.default.contentsOfDirectory(at: dir, includingPropertiesForKeys: nil)) ?? []
        return files.filter { $0.pathExtension == ext }.sorted { $0.path < $1.path }
    }
}

extension Tensor {
    /// Examples `start ..< start + count` along the leading axis.
    func rows(_ start: Int, _ count: Int) -> Tensor {
        let per = self.count / shape[0]
        return Tensor(dtype, [count] + shape.dropFirst(), Array(data[(start * per)..<((start + count) * per)]))
    }
}

/// Compiles source text as if it were a file in Models/ (so `import std.nn` resolves).
func compile(_ source: String, name: String = "test.mdl", stopAfter: String = "sema") -> Compilation {
    Driver.compile(path: Repo.models.appendingPathComponent(name).path, stopAfter: stopAfter, source: source)
}

/// The messages of a compilation's errors.
func errors(_ c: Compilation) -> [String] { c.diagnostics.diagnostics.filter { $0.severity == .error }.map(\.message) }

/// Compiles and fails the test with the rendered diagnostics if there were errors.
func compileOK(_ source: String, stopAfter: String = "sema", file: StaticString = #filePath, line: UInt = #line) -> Module? {
    let c = compile(source, stopAfter: stopAfter)
    if !c.succeeded { XCTFail("unexpected errors:\n" + c.diagnostics.render(), file: file, line: line) }
    return c.module
}

/// A random batch for a step's inputs: sizes B = 3, N = 7, E = 9 (graphs: node i in graph
/// i*B/N, so every graph has nodes); floats in [0, 1); integers 0 or 1, valid as labels,
/// tokens and node indices.
func randomBatch(for f: Function, rng: inout RobustnessTests.SplitMix) -> [String: Tensor] {
    var out: [String: Tensor] = [:]
    let env = ["B": 3, "N": 7, "E": 9]
    for a in f.arguments where f.names[a.id] != "key" {
        let type = f.type(of: a)
        let field = String((f.names[a.id] ?? "").split(separator: ".", maxSplits: 1).last ?? "")
        let shape = type.shape.map { $0.evaluate(env) ?? 4 }
        let n = shape.reduce(1, *)
        let values: [Double]
        switch (type.dtype, field) {
        case (.f32, _): values = (0..<n).map { _ in Double(Float(Double.random(in: 0..<1, using: &rng))) }
        case (_, "graph"): values = (0..<n).map { Double($0 * env["B"]! / n) }
        default: values = (0..<n).map { _ in Double(Int.random(in: 0...1, using: &rng)) }
        }
        out[field] = Tensor(type.dtype, shape, values)
    }
    return out
}
