import CLLVM

/// An error from LLVM, with its message.
public struct LLVMFailure: Error, CustomStringConvertible {
    public let description: String
    static func check(_ e: LLVMErrorRef?, _ what: String) throws {
        guard let e else { return }
        let m = LLVMGetErrorMessage(e)
        let text = m.map { String(cString: $0) } ?? "unknown error"
        LLVMDisposeErrorMessage(m)
        throw LLVMFailure(description: "\(what): \(text)")
    }
}

/// The machine code generates for: the host CPU with all its features (AVX-512 on these
/// machines), and the `default<O3>` pipeline with loop and SLP vectorization.
final class HostTarget {
    let machine: LLVMTargetMachineRef
    let triple: String

    /// `optimized` false: the fastest instruction selection and register allocation, for code
    /// whose speed does not matter (the entry functions).
    init(optimized: Bool = true) throws {
        (machine, triple) = try Self.machine(optimized: optimized, codeModel: LLVMCodeModelDefault)
    }

    /// A target machine for the host, owned by the caller.
    static func machine(optimized: Bool, codeModel: LLVMCodeModel) throws -> (LLVMTargetMachineRef, String) {
        LLVMInitializeNativeTarget()
        LLVMInitializeNativeAsmPrinter()
        let t = LLVMGetDefaultTargetTriple()!
        defer { LLVMDisposeMessage(t) }
        let triple = String(cString: t)
        var target: LLVMTargetRef?
        var message: UnsafeMutablePointer<CChar>?
        guard LLVMGetTargetFromTriple(t, &target, &message) == 0, let target else {
            let text = message.map { String(cString: $0) } ?? "unknown target"
            LLVMDisposeMessage(message)
            throw LLVMFailure(description: "no LLVM target for \(triple): \(text)")
        }
        let cpu = LLVMGetHostCPUName()!, features = LLVMGetHostCPUFeatures()!
        defer { LLVMDisposeMessage(cpu); LLVMDisposeMessage(features) }
        guard let m = LLVMCreateTargetMachine(target, t, cpu, features, optimized ? LLVMCodeGenLevelAggressive : LLVMCodeGenLevelNone, LLVMRelocPIC, codeModel) else {
            throw LLVMFailure(description: "cannot create a target machine for \(triple)")
        }
        return (m, triple)
    }

    deinit { LLVMDisposeTargetMachine(machine) }

    /// Machine code for `module` as an object file or assembly text. Code generation runs its
    /// own IR passes on the module: compile a module once, then dispose of it.
    func machineCode(_ module: LLVMModuleRef, assembly: Bool) throws -> [UInt8] {
        var buffer: LLVMMemoryBufferRef?
        var message: UnsafeMutablePointer<CChar>?
        guard LLVMTargetMachineEmitToMemoryBuffer(machine, module, assembly ? LLVMAssemblyFile : LLVMObjectFile, &message, &buffer) == 0, let buffer else {
            let text = message.map { String(cString: $0) } ?? "unknown error"
            LLVMDisposeMessage(message)
            throw LLVMFailure(description: "emitting an object file: \(text)")
        }
        defer { LLVMDisposeMemoryBuffer(buffer) }
        let start = LLVMGetBufferStart(buffer)!
        return [UInt8](UnsafeRawBufferPointer(start: start, count: LLVMGetBufferSize(buffer)))
    }

    /// Sets the module's target triple and data layout to this machine's.
    func adopt(_ module: LLVMModuleRef) {
        let layout = LLVMCreateTargetDataLayout(machine)
        LLVMSetModuleDataLayout(module, layout)
        LLVMDisposeTargetData(layout)
        LLVMSetTarget(module, triple)
    }

    /// Runs `default<O3>` with loop and SLP vectorization on a module built for this target.
    func optimize(_ module: LLVMModuleRef) throws {
        adopt(module)
        let options = LLVMCreatePassBuilderOptions()
        defer { LLVMDisposePassBuilderOptions(options) }
        LLVMPassBuilderOptionsSetLoopVectorization(options, 1)
        LLVMPassBuilderOptionsSetSLPVectorization(options, 1)
        LLVMPassBuilderOptionsSetLoopUnrolling(options, 0)
        try LLVMFailure.check(LLVMRunPasses(module, "default<O3>", machine, options), "optimizing")
    }
}

/// An in-process JIT (LLJIT) that resolves symbols of this process (libm, OpenBLAS).
final class JIT {
    private let jit: LLVMOrcLLJITRef
    private let context: LLVMOrcThreadSafeContextRef

    /// `optimized` false: the fastest instruction selection (code whose speed does not matter).
    init(optimized: Bool = true) throws {
        LLVMInitializeNativeTarget()
        LLVMInitializeNativeAsmPrinter()
        var builder: LLVMOrcLLJITBuilderRef?
        if !optimized {
            builder = LLVMOrcCreateLLJITBuilder()
            let (machine, _) = try HostTarget.machine(optimized: false, codeModel: LLVMCodeModelJITDefault)
            LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(builder, LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(machine))
        }
        var j: LLVMOrcLLJITRef?
        try LLVMFailure.check(LLVMOrcCreateLLJIT(&j, builder), "creating the JIT")
        jit = j!
        var generator: LLVMOrcDefinitionGeneratorRef?
        try LLVMFailure.check(LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(&generator, LLVMOrcLLJITGetGlobalPrefix(jit), nil, nil), "searching the process")
        LLVMOrcJITDylibAddGenerator(LLVMOrcLLJITGetMainJITDylib(jit), generator)
        context = LLVMOrcCreateNewThreadSafeContext()
    }

    deinit {
        LLVMOrcDisposeLLJIT(jit)
        LLVMOrcDisposeThreadSafeContext(context)
    }

    /// The LLVM context modules for this JIT must be created in.
    var llvmContext: LLVMContextRef { LLVMOrcThreadSafeContextGetContext(context) }

    /// Takes ownership of `module` and compiles it.
    func add(_ module: LLVMModuleRef) throws {
        let tsm = LLVMOrcCreateNewThreadSafeModule(module, context)
        try LLVMFailure.check(LLVMOrcLLJITAddLLVMIRModule(jit, LLVMOrcLLJITGetMainJITDylib(jit), tsm), "adding a module")
    }

    /// The address of a compiled function.
    func address(of name: String) throws -> UInt64 {
        var a: LLVMOrcExecutorAddress = 0
        try LLVMFailure.check(LLVMOrcLLJITLookup(jit, &a, name), "looking up '\(name)'")
        return a
    }
}
