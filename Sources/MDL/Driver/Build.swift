import CLLVM
import Foundation

/// Code generation and linking: the stages after the Graph IR passes.
///   lower  -> Kernel IR (Sources/MDL/Kernel)
///   llvm   -> one LLVM module (Sources/MDL/Codegen), `default<O3>` for the host CPU
///   object -> machine code, linked with the runtime and OpenBLAS into an executable
extension Driver {
    public struct BuildError: Error, CustomStringConvertible {
        public let description: String
        public init(description: String) { self.description = description }
    }

    /// Wall time of each stage of a build, in seconds, and what it produced.
    public struct BuildReport {
        public var stages: [(name: String, seconds: Double)] = []
        public var kernels = 0
        public var gemmCalls = 0
        public var objectBytes = 0
        /// Every symbolic size when `arena` lays the functions out: the recipe's batch size, else 64.
        public var arenaSize = 64
        var functions: [EntryFunction] = []

        /// The largest arena among the functions (bytes, its function), laid out on demand
        /// (`--stats`) rather than in every build; and, at the step where its live buffers take
        /// the most bytes, those buffers (bytes, type, the kernel that writes them), largest first.
        public var arena: (bytes: Int, function: String, busiest: [(bytes: Int, type: String, writer: String)]) {
            var largest = (bytes: 0, function: "", busiest: [(bytes: Int, type: String, writer: String)]())
            for f in functions {
                let plan = ArenaPlan(f)
                let sizes = plan.sizes(f, Dictionary(uniqueKeysWithValues: f.symbols.map { ($0, arenaSize) }))
                let bytes = plan.layout(sizes: sizes).total
                guard bytes > largest.bytes || largest.function.isEmpty else { continue }
                func liveAt(_ position: Int) -> [Int] { plan.live.indices.filter { plan.live[$0].first <= position && position <= plan.live[$0].last } }
                let peak = Set(plan.live.map(\.first)).sorted().map { (position: $0, bytes: liveAt($0).reduce(0) { $0 + sizes[$1] }) }.max { $0.bytes < $1.bytes }
                var writers: [BufferID: String] = [:]
                func walk(_ steps: [Step]) {
                    for step in steps {
                        switch step {
                        case .kernel(let k, _): for b in k.body.flatMap(\.buffersStored) where writers[b] == nil { writers[b] = k.name }
                        case .copy(let to, let from): if writers[to] == nil { writers[to] = "copy of \(f.info(from).name)" }
                        case .loop(_, _, _, let body), .sequence(let body): walk(body)
                        case .alloc, .free: break
                        }
                    }
                }
                walk(f.steps)
                largest = (bytes, f.name, (peak.map { liveAt($0.position) } ?? []).sorted { sizes[$0] > sizes[$1] }.map { i in
                    let b = plan.buffers[i]
                    return (sizes[i], "\(TensorType(f.info(b).dtype, f.info(b).shape))", writers[b] ?? "never written")
                })
            }
            return largest
        }
    }

    /// What `emit` produces from a compiled program.
    public enum Artifact { case unfusedKernelIR, kernelIR, llvmIR, assembly, object }

    static func time<T>(_ name: String, _ report: inout BuildReport, _ body: () throws -> T) rethrows -> T {
        let start = DispatchTime.now().uptimeNanoseconds
        defer { report.stages.append((name, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)) }
        return try body()
    }

    /// Front end and passes, then lowering to the Kernel IR. Compile errors come back as diagnostics.
    static func lower(path: String, report: inout BuildReport, fusion: Bool = true) throws -> (KernelProgram, String) {
        let c = time("front end and passes", &report) { compile(path: path) }
        guard c.succeeded, let m = c.module else { throw BuildError(description: c.diagnostics.render()) }
        let irText = printIR(m)
        do {
            let program = try time("lower", &report) { try Lowering.run(m, fusion: fusion) }
            for f in program.functions { count(f.steps, &report) }
            if case .int(let batch)? = m.recipe["batch"] { report.arenaSize = batch }
            report.functions = program.functions
            return (program, irText)
        } catch let e as Lowering.Failure {
            throw BuildError(description: "\(path): error: cannot generate code: \(e.description)")
        }
    }

    private static func count(_ steps: [Step], _ report: inout BuildReport) {
        for s in steps {
            switch s {
            case .kernel(let k, _):
                report.kernels += 1
                report.gemmCalls += k.body.gemmCount
            case .loop(_, _, _, let body), .sequence(let body): count(body, &report)
            default: break
            }
        }
    }

    /// The Kernel IR text, the optimized LLVM IR, the assembly or the object code of an `.mdl` file:
    /// one text, or the objects (the kernels in `kernelModules` modules compiled on as many
    /// threads, then the entry functions).
    public static func emit(_ artifact: Artifact, path: String, withMain: Bool = true, kernelModules: Int = 1) throws -> (parts: [[UInt8]], report: BuildReport) {
        var report = BuildReport()
        let (program, irText) = try lower(path: path, report: &report, fusion: artifact != .unfusedKernelIR)
        if artifact == .kernelIR || artifact == .unfusedKernelIR { return ([Array(KernelPrinter().print(program).utf8)], report) }
        let modules = try time("llvm", &report) {
            try ProgramModules(program, hash: Manifest.hash(irText + mdlVersion), withMain: withMain, kernelModules: kernelModules)
        }
        switch artifact {
        case .llvmIR:
            let text = modules.modules.map { m -> String in
                let t = LLVMPrintModuleToString(m)!
                defer { LLVMDisposeMessage(t) }
                return String(cString: t)
            }.joined(separator: "\n")
            return ([Array(text.utf8)], report)
        case .assembly:
            return (try time("object", &report) { [Array(try modules.machineCode(assembly: true).joined())] }, report)
        default:
            let objects = try time("object", &report) { try modules.machineCode(assembly: false) }
            report.objectBytes = objects.reduce(0) { $0 + $1.count }
            return (objects, report)
        }
    }

    /// The LLVM modules of a build: the kernels in modules of their own, each in an LLVM context
    /// of its own so that they optimize and compile on threads of their own (XLA's parallel
    /// codegen), then the entry functions. Every module is verified and the kernels optimized.
    final class ProgramModules {
        private(set) var contexts: [LLVMContextRef] = []
        private(set) var modules: [LLVMModuleRef] = []
        private var targets: [HostTarget] = []

        init(_ program: KernelProgram, hash: UInt64, withMain: Bool, kernelModules: Int) throws {
            do {
                let entries = add(program.module.name, target: try HostTarget(optimized: false))
                let kernels = try ProgramEmitter(program: program, manifest: Manifest.text(program, hash: hash))
                    .emitEntries(into: entries, context: contexts[0], withMain: withMain)
                for (i, group) in kernels.groups(kernelModules).enumerated() {
                    let m = add(program.module.name + ".kernels\(i == 0 ? "" : "\(i + 1)")", target: try HostTarget())
                    ProgramEmitter.emitKernels(group, into: m, context: contexts.last!, helpers: i == 0)
                }
                // The kernel modules first, as the objects are listed.
                contexts.append(contexts.removeFirst()); modules.append(modules.removeFirst()); targets.append(targets.removeFirst())
                _ = try Driver.inParallel(modules.count) { i in
                    try verify(modules[i], program)
                    if i < modules.count - 1 { try targets[i].optimize(modules[i]) } else { targets[i].adopt(modules[i]) }
                }
            } catch {
                dispose()
                throw error
            }
        }

        private func add(_ name: String, target: HostTarget) -> LLVMModuleRef {
            let context = LLVMContextCreate()!
            let m = LLVMModuleCreateWithNameInContext(name, context)!
            contexts.append(context); modules.append(m); targets.append(target)
            return m
        }

        /// Object code or assembly of each module, compiled in parallel.
        func machineCode(assembly: Bool) throws -> [[UInt8]] {
            try Driver.inParallel(modules.count) { i in try targets[i].machineCode(modules[i], assembly: assembly) }
        }

        private func dispose() {
            modules.forEach(LLVMDisposeModule)
            contexts.forEach(LLVMContextDispose)
            (modules, contexts) = ([], [])
        }

        deinit { dispose() }
    }

    /// `body(0) ... body(n - 1)` on up to n threads; the first error, if any, is thrown.
    static func inParallel<T>(_ n: Int, _ body: (Int) throws -> T) throws -> [T] {
        var results = [Result<T, Error>?](repeating: nil, count: n)
        results.withUnsafeMutableBufferPointer { slots in
            DispatchQueue.concurrentPerform(iterations: n) { i in slots[i] = Result { try body(i) } }
        }
        return try results.map { try $0!.get() }
    }

    static func verify(_ m: LLVMModuleRef, _ program: KernelProgram) throws {
        var message: UnsafeMutablePointer<CChar>?
        defer { LLVMDisposeMessage(message) }
        if LLVMVerifyModule(m, LLVMReturnStatusAction, &message) != 0 {
            let text = message.map { String(cString: $0) } ?? ""
            throw BuildError(description: "internal compiler error: invalid LLVM IR for @\(program.module.name): \(text.prefix(2000))")
        }
    }

    /// The kernel and entry modules of a program in one context (a JIT's), verified, the kernels
    /// optimized with `default<O3>` unless `optimize` is false (tests that only compare
    /// results); the caller owns them.
    static func generate(_ program: KernelProgram, hash: UInt64, context: LLVMContextRef, withMain: Bool,
                         target: HostTarget, quickTarget: HostTarget, optimize: Bool = true) throws -> (LLVMModuleRef, LLVMModuleRef) {
        let kernels = LLVMModuleCreateWithNameInContext(program.module.name + ".kernels", context)!
        let entries = LLVMModuleCreateWithNameInContext(program.module.name, context)!
        do {
            let table = try ProgramEmitter(program: program, manifest: Manifest.text(program, hash: hash)).emitEntries(into: entries, context: context, withMain: withMain)
            ProgramEmitter.emitKernels(table.entries, into: kernels, context: context, helpers: true)
            for m in [kernels, entries] { try verify(m, program) }
            if optimize { try target.optimize(kernels) } else { target.adopt(kernels) }
            quickTarget.adopt(entries)
            return (kernels, entries)
        } catch {
            LLVMDisposeModule(kernels)
            LLVMDisposeModule(entries)
            throw error
        }
    }

    /// `mdlc build`: source to a linked executable at `output`.
    /// `jobs`: kernel modules compiled in parallel (default: the online cores, at most 16).
    public static func build(path: String, output: String, jobs: Int? = nil) throws -> BuildReport {
        var (objects, report) = try emit(.object, path: path, kernelModules: jobs ?? min(16, ProcessInfo.processInfo.activeProcessorCount))
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mdlc-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        var objectPaths: [String] = []
        for (i, object) in objects.enumerated() {
            let objectPath = dir.appendingPathComponent("program\(i).o").path
            guard FileManager.default.createFile(atPath: objectPath, contents: Data(object)) else {
                throw BuildError(description: "cannot write the object file '\(objectPath)'")
            }
            objectPaths.append(objectPath)
        }
        try time("link", &report) {
            let runtime = try runtimeObjects()
            let linker = try findLinker()
            // Link into a temporary name next to the output, then rename: a failed link leaves no half-written binary.
            let temporary = output + ".tmp-\(getpid())"
            let args = objectPaths + runtime + ["-o", temporary, "-lopenblas", "-lm", "-lpthread"]
            let (status, text) = run(linker, args)
            guard status == 0 else {
                try? FileManager.default.removeItem(atPath: temporary)
                throw BuildError(description: "linking '\(output)' with \(linker) failed:\n\(text)")
            }
            if rename(temporary, output) != 0 {
                try? FileManager.default.removeItem(atPath: temporary)
                throw BuildError(description: "cannot write '\(output)': \(String(cString: strerror(errno)))")
            }
        }
        return report
    }

    /// The runtime's object files, compiled by SwiftPM next to this executable (`MDLRuntime.build/`),
    /// or in `MDL_RUNTIME_DIR`.
    static func runtimeObjects() throws -> [String] {
        var candidates: [String] = []
        if let env = ProcessInfo.processInfo.environment["MDL_RUNTIME_DIR"] { candidates.append(env) }
        let exe = URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0])
        candidates.append(exe.deletingLastPathComponent().appendingPathComponent("MDLRuntime.build").path)
        for dir in candidates {
            guard let files = try? FileManager.default.contentsOfDirectory(atPath: dir) else { continue }
            let objects = files.filter { $0.hasSuffix(".o") }.sorted().map { dir + "/" + $0 }
            if !objects.isEmpty { return objects }
        }
        throw BuildError(description: "cannot find the mdl runtime's object files (looked in \(candidates.joined(separator: ", "))); build mdlc with 'swift build' or set MDL_RUNTIME_DIR")
    }

    /// The C compiler driver used as linker: the Swift toolchain's clang, then cc.
    static func findLinker() throws -> String {
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":").map(String.init)
        for name in ["clang", "cc", "gcc"] {
            for dir in path where FileManager.default.isExecutableFile(atPath: dir + "/" + name) { return dir + "/" + name }
        }
        throw BuildError(description: "no linker found: install clang or gcc (apt-get install clang), or put the Swift toolchain's bin folder on PATH")
    }

    static func run(_ tool: String, _ args: [String]) -> (Int32, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tool)
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        do { try p.run() } catch { return (-1, "cannot run \(tool): \(error)") }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}

extension Array where Element == KernelStmt {
    var gemmCount: Int {
        reduce(0) { n, s in
            switch s {
            case .gemm: return n + 1
            case .loop(_, _, let body), .parallel(_, _, let body, _), .when(_, let body): return n + body.gemmCount
            default: return n
            }
        }
    }
}

extension Driver {
    /// `mdlc run`: the path of an executable for `path`, built unless the cache has one for the
    /// same program. The key hashes the program's Graph IR after the front end (so the source
    /// and everything it imports), the compiler version and this compiler executable's identity.
    public static func cachedBuild(path: String) throws -> String {
        let c = compile(path: path, stopAfter: "sema")
        guard c.succeeded, let m = c.module else { throw BuildError(description: c.diagnostics.render()) }
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let attributes = (try? FileManager.default.attributesOfItem(atPath: exe)) ?? [:]
        let identity = "\((attributes[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0) \((attributes[.size] as? Int) ?? 0)"
        let key = Manifest.hash(printIR(m) + mdlVersion + identity)
        let env = ProcessInfo.processInfo.environment
        let base = env["MDL_CACHE_DIR"] ?? ((env["XDG_CACHE_HOME"] ?? (NSHomeDirectory() + "/.cache")) + "/mdl")
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        let binary = base + "/\(m.name)-\(String(key, radix: 16))"
        if FileManager.default.isExecutableFile(atPath: binary) { return binary }
        _ = try build(path: path, output: binary)
        return binary
    }
}
