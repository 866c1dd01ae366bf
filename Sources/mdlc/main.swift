import ArgumentParser
import Foundation
import MDL

struct Mdlc: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mdlc",
        abstract: "The mdl compiler: tensor programs and their training recipes to native code.",
        version: Driver.versionText,
        subcommands: [Check.self, Build.self, Run.self, DumpIR.self, Grad.self, Ops.self]
    )
}

/// Prints diagnostics to standard error; returns the exit code.
func report(_ c: Compilation) -> Int32 {
    if !c.diagnostics.diagnostics.isEmpty {
        FileHandle.standardError.write((c.diagnostics.render() + "\n").data(using: .utf8)!)
    }
    let errors = c.diagnostics.diagnostics.filter { $0.severity == .error }.count
    if errors > 0 {
        FileHandle.standardError.write("\(errors) error\(errors == 1 ? "" : "s") generated.\n".data(using: .utf8)!)
        return 1
    }
    return 0
}

/// Runs `body`; an error it throws is printed to standard error (after `prefix`) and ends mdlc with status 1.
func exitOnError(_ prefix: String = "", _ body: () throws -> Void) throws {
    do {
        try body()
    } catch {
        FileHandle.standardError.write("\(prefix)\(error)\n".data(using: .utf8)!)
        throw ExitCode(1)
    }
}

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Parse, type-check and differentiate .mdl files; exit 1 if any has errors.")
    @Argument(help: "The .mdl files to check.") var files: [String]

    func run() throws {
        var status: Int32 = 0
        for f in files {
            let c = Driver.compile(path: f)
            if report(c) != 0 { status = 1 }
        }
        if status != 0 { throw ExitCode(status) }
    }
}

struct DumpIR: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "dump-ir", abstract: "Print the Graph IR of an .mdl file or of IR text (which reads back in).")
    static let codegenStages = ["lower", "fusion", "llvm"]
    @Option(help: "Print the IR after this pass: \((Pipeline.stageNames + codegenStages).joined(separator: ", ")) (lower: the Kernel IR, one kernel per op; fusion: the Kernel IR that is compiled; llvm: the optimized LLVM IR).") var after: String = "sema"
    @Option(help: "Output format: text (parses back) or dot (Graphviz).") var format: String = "text"
    @Argument(help: "An .mdl file or an IR text file.") var file: String

    func validate() throws {
        guard (Pipeline.stageNames + Self.codegenStages).contains(after) else {
            throw ValidationError("unknown pass '\(after)'; passes are \((Pipeline.stageNames + Self.codegenStages).joined(separator: ", "))")
        }
        guard ["text", "dot"].contains(format) else { throw ValidationError("unknown format '\(format)'; use text or dot") }
    }

    func run() throws {
        if Self.codegenStages.contains(after) {
            try exitOnError {
                let (parts, _) = try Driver.emit(after == "lower" ? .unfusedKernelIR : after == "fusion" ? .kernelIR : .llvmIR, path: file)
                FileHandle.standardOutput.write(Data(parts.joined()))
            }
            return
        }
        let c = Driver.compile(path: file, stopAfter: after)
        let status = report(c)
        guard status == 0, let m = c.module else { throw ExitCode(status == 0 ? 1 : status) }
        print(format == "dot" ? Driver.dotGraph(m) : Driver.printIR(m), terminator: "")
    }
}

struct Grad: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The loss and every parameter gradient of one update for given weights and batch (safetensors in and out).",
        discussion: "Computed by mdl's reference interpreter in float64 from its own autodiff; Tools/torch-check compares the result with PyTorch.")
    @Argument(help: "The .mdl file.") var file: String
    @Option(help: "Weights by parameter name (missing ones keep their initialization).") var weights: String?
    @Option(help: "The batch: one tensor per field of the training data (x, y, ...).") var batch: String
    @Option(help: "Where to write 'loss' and 'grad.<parameter>' tensors (float64).") var out: String
    @Option(help: "Which update of the step (0 for the first minimize).") var step: Int = 0
    @Option(help: "Seed for initialization and random ops.") var seed: Int32 = 0

    func run() throws {
        try exitOnError("mdlc grad: ") {
            let w = try weights.map(Safetensors.read) ?? [:]
            let b = try Safetensors.read(batch)
            let result = try Driver.referenceGradients(path: file, weights: w, batch: b, step: step, seed: seed)
            try Safetensors.write(result, to: out)
        }
    }
}

struct Build: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compile an .mdl file to a standalone executable (or its object code, assembly or LLVM IR).",
        discussion: "The executable links the mdl runtime and OpenBLAS; run it with --help to see its commands.")
    @Argument(help: "The .mdl file.") var file: String
    @Option(name: .shortAndLong, help: "Output path (default: the file's name without .mdl).") var output: String?
    @Option(help: "What to write: exe, object (two files: kernels, and entry functions as NAME.entries.o), asm or llvm.") var emit: String = "exe"
    @Flag(help: "Print the time of each stage, the kernel and GEMM counts.") var stats = false
    @Option(name: .shortAndLong, help: "Kernel modules of an executable compiled in parallel, beside the entry functions' (default: the online cores, at most 16).") var jobs: Int?

    func validate() throws {
        guard ["exe", "object", "asm", "llvm"].contains(emit) else { throw ValidationError("unknown --emit '\(emit)'; use exe, object, asm or llvm") }
        if let jobs, jobs < 1 { throw ValidationError("--jobs must be at least 1") }
    }

    func run() throws {
        let out = output ?? URL(fileURLWithPath: file).deletingPathExtension().lastPathComponent + (emit == "exe" ? "" : emit == "object" ? ".o" : emit == "asm" ? ".s" : ".ll")
        try exitOnError {
            let report: Driver.BuildReport
            if emit == "exe" {
                report = try Driver.build(path: file, output: out, jobs: jobs)
            } else {
                let artifact: Driver.Artifact = emit == "object" ? .object : emit == "asm" ? .assembly : .llvmIR
                let (parts, r) = try Driver.emit(artifact, path: file)
                // Objects: the kernels and the entry functions, OUT and OUT with ".entries" before its extension.
                let paths = artifact == .object ? [out, (out as NSString).deletingPathExtension + ".entries.o"] : [out]
                let contents = artifact == .object ? parts : [Array(parts.joined())]
                for (p, c) in zip(paths, contents) where !FileManager.default.createFile(atPath: p, contents: Data(c)) {
                    throw Driver.BuildError(description: "cannot write '\(p)'")
                }
                report = r
            }
            if stats {
                for (name, seconds) in report.stages { print(String(format: "%-22@ %8.1f ms", name as NSString, seconds * 1000)) }
                print(String(format: "%-22@ %8.1f ms", "total" as NSString, report.stages.reduce(0) { $0 + $1.seconds } * 1000))
                print("kernels \(report.kernels), GEMM calls \(report.gemmCalls)")
                let arena = report.arena
                print(String(format: "arena %.1f MB (@%@ with every size symbol = %d; one arena serves all functions)",
                             Double(arena.bytes) / 1_048_576, arena.function, report.arenaSize))
                let busiest = arena.busiest.reduce(0) { $0 + $1.bytes }
                print(String(format: "  at its busiest %.1f MB live in %d buffers, the largest:", Double(busiest) / 1_048_576, arena.busiest.count))
                for b in arena.busiest.prefix(8) { print(String(format: "  %8.1f MB  %@  %@", Double(b.bytes) / 1_048_576, b.type, b.writer)) }
            }
        }
    }
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Build an .mdl file (reusing a cached build of the same sources and compiler) and run it.",
        discussion: "Example: mdlc run Models/mlp_mnist.mdl -- train --epochs 1")
    @Argument(help: "The .mdl file.") var file: String
    @Argument(parsing: .postTerminator, help: "Arguments for the program.") var arguments: [String] = []

    func run() throws {
        try exitOnError {
            let binary = try Driver.cachedBuild(path: file)
            let args = [binary] + arguments
            let cArgs = args.map { strdup($0) } + [nil]
            execv(binary, cArgs)
            throw Driver.BuildError(description: "cannot run '\(binary)': \(String(cString: strerror(errno)))")
        }
    }
}

struct Ops: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the Graph IR ops with their semantics.")
    func run() throws { print(Driver.opTable()) }
}

Mdlc.main()
