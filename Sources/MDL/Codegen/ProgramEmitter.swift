import CLLVM

/// Emits a whole Kernel IR program as LLVM modules: one of every entry function (`mdl_fn_<i>`),
/// the table `mdl_functions` of their addresses, the `mdl_manifest` text and optionally a `main`
/// that hands both to the runtime's `mdl_main` (docs/RUNTIME.md); and the kernels they call, in
/// one module or in groups that compile in parallel (optimized with O3). Entry functions are
/// long sequences of calls that gain nothing from optimization but cost superlinear time in
/// it, so their module is compiled quickly.
struct ProgramEmitter {
    let program: KernelProgram
    let manifest: String

    /// The entry functions into `module`; returns the kernels they call, still to be defined.
    func emitEntries(into module: LLVMModuleRef, context: LLVMContextRef, withMain: Bool) throws -> KernelTable {
        let t = LLVMContextTypes(module: module, context: context)
        let entries = EntryEmitter(t: t, kernels: KernelTable())
        var functions: [LLVMValueRef?] = []
        for (i, f) in program.functions.enumerated() { functions.append(try entries.emit(f, symbol: "mdl_fn_\(i)")) }

        let table = LLVMAddGlobal(module, LLVMArrayType2(t.ptr, UInt64(functions.count)), "mdl_functions")!
        LLVMSetInitializer(table, LLVMConstArray2(t.ptr, &functions, UInt64(functions.count)))
        LLVMSetGlobalConstant(table, 1)
        let text = LLVMConstStringInContext2(context, manifest, manifest.utf8.count, 0)!
        let manifestGlobal = LLVMAddGlobal(module, LLVMTypeOf(text), "mdl_manifest")!
        LLVMSetInitializer(manifestGlobal, text)
        LLVMSetGlobalConstant(manifestGlobal, 1)

        if withMain {
            let (main, _) = t.function("main", t.i32, [t.i32, t.ptr])
            let b = LLVMCreateBuilderInContext(context)!
            defer { LLVMDisposeBuilder(b) }
            LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(context, main, "entry"))
            let rc = t.call(b, "mdl_main", t.i32, [LLVMGetParam(main, 0), LLVMGetParam(main, 1), manifestGlobal, table])
            LLVMBuildRet(b, rc)
        }
        return entries.kernels
    }

    /// Defines `kernels` in `module`, and the entry functions' helper `mdl.after` when `helpers`
    /// (in exactly one kernel module).
    static func emitKernels(_ kernels: [KernelTable.Entry], into module: LLVMModuleRef, context: LLVMContextRef, helpers: Bool) {
        let t = LLVMContextTypes(module: module, context: context)
        if helpers { EntryEmitter.emitAfterKernel(t) }
        for e in kernels { _ = KernelEmitter(t: t, buffers: e.buffers, symbols: e.symbols).define(e.kernel) }
    }
}
