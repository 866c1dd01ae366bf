import CLLVM

/// Emits a reduction over the last axis of a row-major [rows, cols] buffer:
/// `void name(float *out, const float *in, i64 rows, i64 cols)`. The accumulating adds carry
/// the `reassoc` and `nsz` fast-math flags, so LLVM may reorder the sum and vectorize it; that
/// reordering is the only rounding difference from a sequential sum, and reductions are the
/// only place these flags are used. max and min need no reassociation (`maxnum` is associative).
struct ReductionKernel {
    enum Kind { case sum, mean, max, min }
    let kind: Kind

    func emit(name: String, into module: LLVMModuleRef, context ctx: LLVMContextRef) {
        let f32 = LLVMFloatTypeInContext(ctx)!, i64 = LLVMInt64TypeInContext(ctx)!, ptr = LLVMPointerTypeInContext(ctx, 0)!
        var params: [LLVMTypeRef?] = [ptr, ptr, i64, i64]
        let fn = LLVMAddFunction(module, name, LLVMFunctionType(LLVMVoidTypeInContext(ctx), &params, 4, 0))!
        markNoAlias(fn, parameters: [0, 1], context: ctx)
        let b = LLVMCreateBuilderInContext(ctx)!
        defer { LLVMDisposeBuilder(b) }
        let entry = LLVMAppendBasicBlockInContext(ctx, fn, "entry"), rowLoop = LLVMAppendBasicBlockInContext(ctx, fn, "row"),
            colLoop = LLVMAppendBasicBlockInContext(ctx, fn, "col"), rowEnd = LLVMAppendBasicBlockInContext(ctx, fn, "row.end"),
            exit = LLVMAppendBasicBlockInContext(ctx, fn, "exit")
        let (out, input, rows, cols) = (LLVMGetParam(fn, 0), LLVMGetParam(fn, 1), LLVMGetParam(fn, 2), LLVMGetParam(fn, 3))
        let zero = LLVMConstInt(i64, 0, 0)
        let identity: Double = kind == .max ? -Double.infinity : kind == .min ? Double.infinity : 0

        LLVMPositionBuilderAtEnd(b, entry)
        LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSGT, rows, zero, ""), rowLoop, exit)

        LLVMPositionBuilderAtEnd(b, rowLoop)
        let r = LLVMBuildPhi(b, i64, "r")!
        let base = LLVMBuildMul(b, r, cols, "")
        LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSGT, cols, zero, ""), colLoop, rowEnd)

        LLVMPositionBuilderAtEnd(b, colLoop)
        let c = LLVMBuildPhi(b, i64, "c")!, acc = LLVMBuildPhi(b, f32, "acc")!
        var index: [LLVMValueRef?] = [LLVMBuildAdd(b, base, c, "")]
        let x = LLVMBuildLoad2(b, f32, LLVMBuildInBoundsGEP2(b, f32, input, &index, 1, ""), "")!
        let next: LLVMValueRef
        switch kind {
        case .sum, .mean:
            next = LLVMBuildFAdd(b, acc, x, "")
            LLVMSetFastMathFlags(next, LLVMFastMathFlags(LLVMFastMathAllowReassoc | LLVMFastMathNoSignedZeros))
        case .max, .min:
            var types: [LLVMTypeRef?] = [f32, f32]
            let type = LLVMFunctionType(f32, &types, 2, 0)
            let intrinsic = kind == .max ? "llvm.maxnum.f32" : "llvm.minnum.f32"
            let callee = LLVMGetNamedFunction(module, intrinsic) ?? LLVMAddFunction(module, intrinsic, type)
            var args: [LLVMValueRef?] = [acc, x]
            next = LLVMBuildCall2(b, type, callee, &args, 2, "")
        }
        closeCountedLoop(b, index: c, bound: cols, header: colLoop, preheader: rowLoop, exit: rowEnd)
        var accIn: [LLVMValueRef?] = [LLVMConstReal(f32, identity), next]
        var accFrom: [LLVMBasicBlockRef?] = [rowLoop, colLoop]
        LLVMAddIncoming(acc, &accIn, &accFrom, 2)

        LLVMPositionBuilderAtEnd(b, rowEnd)
        let result = LLVMBuildPhi(b, f32, "result")!
        var resIn: [LLVMValueRef?] = [LLVMConstReal(f32, identity), next]
        var resFrom: [LLVMBasicBlockRef?] = [rowLoop, colLoop]
        LLVMAddIncoming(result, &resIn, &resFrom, 2)
        var value: LLVMValueRef = result
        if kind == .mean { value = LLVMBuildFDiv(b, result, LLVMBuildSIToFP(b, cols, f32, ""), "") }
        var outIndex: [LLVMValueRef?] = [r]
        LLVMBuildStore(b, value, LLVMBuildInBoundsGEP2(b, f32, out, &outIndex, 1, ""))
        closeCountedLoop(b, index: r, bound: rows, header: rowLoop, preheader: entry, exit: exit)

        LLVMPositionBuilderAtEnd(b, exit)
        LLVMBuildRetVoid(b)
    }
}
