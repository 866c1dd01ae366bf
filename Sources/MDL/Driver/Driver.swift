import Foundation
import CLLVM
import COpenBLAS

public let mdlVersion = "0.1.0"

/// The compiler pipeline as a linear script: each stage takes the module from the one before,
/// and `--after NAME` prints the IR at that point.
public enum Pipeline {
    /// Stages after the front end, in order; each is one pass file with one entry point.
    /// (Fusion and code generation are appended here as they land.)
    public static let stages: [(name: String, run: (Module, DiagnosticEngine) -> Module)] = [
        ("autodiff", Autodiff.run),
        ("gradients", GradientFunctions.run),
        ("optimizer", OptimizerLowering.run),
        ("fold", ConstantFolding.run),
        ("algebra", AlgebraicSimplification.run),
        ("cse", CommonSubexpressionElimination.run),
        ("dce", DeadCodeElimination.run),
    ]
    public static var stageNames: [String] { ["sema"] + stages.map(\.name) }
}

/// Result of running the compiler on one input.
public struct Compilation {
    public let diagnostics: DiagnosticEngine
    public let module: Module?
    public var succeeded: Bool { module != nil && !diagnostics.hasErrors }
}

public enum Driver {
    /// Versions of the compiler and the libraries it links.
    public static var versionText: String {
        var major: UInt32 = 0, minor: UInt32 = 0, patch: UInt32 = 0
        LLVMGetVersion(&major, &minor, &patch)
        let blas = String(cString: openblas_get_config())
        return "mdlc \(mdlVersion)\nLLVM \(major).\(minor).\(patch)\nOpenBLAS \(blas)"
    }

    /// Parses, elaborates and verifies an `.mdl` file, or parses an IR text file (`.mdlir` or text starting with `module`),
    /// then runs the pipeline up to and including `stopAfter`.
    public static func compile(path: String, stopAfter: String? = nil, source: String? = nil) -> Compilation {
        let diags = DiagnosticEngine()
        guard let text = source ?? (try? String(contentsOfFile: path, encoding: .utf8)) else {
            let exists = FileManager.default.fileExists(atPath: path)
            diags.error(exists ? "cannot read '\(path)' (not UTF-8 text, or permission denied)" : "no such file: '\(path)'", at: .unknown)
            return Compilation(diagnostics: diags, module: nil)
        }
        let file = SourceFile(path: path, text: text)
        var module: Module?
        if path.hasSuffix(".mdlir") || looksLikeIR(text) {
            var p = IRParser(file: file, diags: diags)
            module = p.parseModule()
            if let m = module {
                // IR text comes from users: its problems are errors in that file, not compiler bugs.
                for e in Verifier().verify(m) { diags.error(e, at: SourceRange(file: file, start: 0, end: 0)) }
            }
        } else {
            module = frontEnd(file, diags: diags)
        }
        guard var m = module, !diags.hasErrors else { return Compilation(diagnostics: diags, module: nil) }
        if stopAfter != "sema" {
            for stage in Pipeline.stages {
                m = stage.run(m, diags)
                if diags.hasErrors { return Compilation(diagnostics: diags, module: nil) }
                if stage.name == stopAfter { break }
            }
        }
        // One verification of what the front end and the passes produced.
        let problems = Verifier().verify(m)
        for p in problems { diags.error("internal compiler error: invalid IR: \(p)", at: .unknown) }
        return Compilation(diagnostics: diags, module: problems.isEmpty ? m : nil)
    }

    /// IR text starts with `module @`, after blank space and `//` comment lines.
    static func looksLikeIR(_ text: String) -> Bool {
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            let t = line.drop(while: \.isWhitespace)
            if t.isEmpty || t.hasPrefix("//") { continue }
            return t.hasPrefix("module @")
        }
        return false
    }

    /// Syntax and sema for one main file and everything it imports.
    static func frontEnd(_ file: SourceFile, diags: DiagnosticEngine) -> Module? {
        var parser = Parser(file: file, diags: diags)
        var main = parser.parseFile()
        var files: [SourceModule] = []
        var loaded = [canonical(file.path): file]
        loadImports(of: &main, into: &files, loaded: &loaded, diags: diags)
        files.append(main)
        let name = URL(fileURLWithPath: file.path).deletingPathExtension().lastPathComponent
        let elaborator = Elaborator(moduleName: sanitize(name), diags: diags)
        elaborator.run(files: files, main: main)
        return diags.hasErrors ? nil : elaborator.module
    }

    private static func sanitize(_ s: String) -> String {
        let ok = s.map { $0.isLetter || $0.isNumber || $0 == "_" || $0 == "." ? $0 : "_" }
        return String(ok)
    }

    private static func canonical(_ path: String) -> String { URL(fileURLWithPath: path).standardizedFileURL.resolvingSymlinksInPath().path }

    /// Loads imports depth-first so that a file's dependencies come before it, recording each
    /// file's direct imports (its visible names are its own and those of its imports, transitively).
    private static func loadImports(of module: inout SourceModule, into files: inout [SourceModule], loaded: inout [String: SourceFile], diags: DiagnosticEngine) {
        for decl in module.decls {
            guard case .importDecl(let path, let range) = decl else { continue }
            let relative = path.joined(separator: "/") + ".mdl"
            guard let found = searchDirectories(for: module.file.path).lazy.map({ $0 + "/" + relative }).first(where: { FileManager.default.fileExists(atPath: $0) }) else {
                diags.error("cannot find module '\(path.joined(separator: "."))' (looked for '\(relative)' next to the file, in its parent folders, in MDL_PATH and in the standard library)", at: range)
                continue
            }
            let key = canonical(found)
            if let known = loaded[key] {
                module.imports.append(known)
                continue
            }
            guard let text = try? String(contentsOfFile: found, encoding: .utf8) else {
                diags.error("cannot read '\(found)'", at: range)
                continue
            }
            let file = SourceFile(path: found, text: text)
            loaded[key] = file
            module.imports.append(file)
            var p = Parser(file: file, diags: diags)
            var imported = p.parseFile()
            loadImports(of: &imported, into: &files, loaded: &loaded, diags: diags)
            files.append(imported)
        }
    }

    /// Where `import a.b` looks: the importing file's folder and its parents, MDL_PATH, then the standard library.
    static func searchDirectories(for path: String) -> [String] {
        var dirs: [String] = []
        var dir = URL(fileURLWithPath: path).standardizedFileURL.deletingLastPathComponent()
        for _ in 0..<8 {
            dirs.append(dir.path)
            let parent = dir.deletingLastPathComponent()
            if parent.path == dir.path { break }
            dir = parent
        }
        if let env = ProcessInfo.processInfo.environment["MDL_PATH"] { dirs += env.split(separator: ":").map(String.init) }
        dirs += standardLibraryRoots()
        return dirs
    }

    /// Folders holding `std/`: next to the mdlc executable's ancestors (a build tree or an install), then this source tree.
    static func standardLibraryRoots() -> [String] {
        var roots: [String] = []
        var dir = URL(fileURLWithPath: CommandLine.arguments.first ?? ".").standardizedFileURL.deletingLastPathComponent()
        for _ in 0..<6 {
            roots.append(dir.appendingPathComponent("Models").path)
            roots.append(dir.appendingPathComponent("share/mdl").path)
            dir = dir.deletingLastPathComponent()
        }
        let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        roots.append(source.appendingPathComponent("Models").path)
        return roots
    }

    public static func printIR(_ m: Module) -> String { IRPrinter().print(m) }
    public static func dotGraph(_ m: Module) -> String { DotPrinter().print(m) }
    public static func opTable() -> String {
        OpKind.allCases.map { "\($0.name): \($0.summary)" }.joined(separator: "\n")
    }
}
