import CLLVM

/// Emits a whole Kernel IR program as two LLVM modules: the kernels (optimized with O3), and
/// every entry function (`mdl_fn_<i>`), the table `mdl_functions` of their addresses, the
/// `mdl_manifest` text and optionally a `main` that hands both to the runtime's `mdl_main`
/// (docs/RUNTIME.md). Entry functions are long sequences of calls that gain nothing from
/// optimization but cost superlinear time in it, so their module is compiled quickly.
struct ProgramEmitter {
    let program: KernelProgram
    let manifest: String

    func emit(kernels: LLVMModuleRef, entries module: LLVMModuleRef, context: LLVMContextRef, withMain: Bool) throws {
        let t = LLVMContextTypes(module: module, context: context)
        let entries = EntryEmitter(t: t, kernelModule: LLVMContextTypes(module: kernels, context: context))
        entries.emitAfterKernel()
        var functions: [LLVMValueRef?] = []
        for (i, f) in program.functions.enumerated() { functions.append(try entries.emit(f, symbol: "mdl_fn_\(i)")) }

        let table = LLVMAddGlobal(module, LLVMArrayType2(t.ptr, UInt64(functions.count)), "mdl_functions")!
        LLVMSetInitializer(table, LLVMConstArray2(t.ptr, &functions, UInt64(functions.count)))
        LLVMSetGlobalConstant(table, 1)
        let text = LLVMConstStringInContext2(context, manifest, manifest.utf8.count, 0)!
        let manifestGlobal = LLVMAddGlobal(module, LLVMTypeOf(text), "mdl_manifest")!
        LLVMSetInitializer(manifestGlobal, text)
        LLVMSetGlobalConstant(manifestGlobal, 1)

        guard withMain else { return }
        let (main, _) = t.function("main", t.i32, [t.i32, t.ptr])
        let b = LLVMCreateBuilderInContext(context)!
        defer { LLVMDisposeBuilder(b) }
        LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(context, main, "entry"))
        let rc = t.call(b, "mdl_main", t.i32, [LLVMGetParam(main, 0), LLVMGetParam(main, 1), manifestGlobal, table])
        LLVMBuildRet(b, rc)
    }
}
