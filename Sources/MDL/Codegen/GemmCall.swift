import CLLVM

/// Emits a matrix product as a call of OpenBLAS's `cblas_sgemm` (row-major), with the operand
/// transposes folded into the call's flags:
/// `void name(float *c, const float *a, const float *b, i32 m, i32 n, i32 k)` computes
/// c[m,n] = op(a) @ op(b), where op(a) is [m,k] (a stored [k,m] when `transposeA`) and op(b) is
/// [k,n] (b stored [n,k] when `transposeB`).
struct GemmCall {
    let transposeA: Bool
    let transposeB: Bool

    func emit(name: String, into module: LLVMModuleRef, context ctx: LLVMContextRef) {
        let f32 = LLVMFloatTypeInContext(ctx)!, i32 = LLVMInt32TypeInContext(ctx)!, ptr = LLVMPointerTypeInContext(ctx, 0)!
        var params: [LLVMTypeRef?] = [ptr, ptr, ptr, i32, i32, i32]
        let fn = LLVMAddFunction(module, name, LLVMFunctionType(LLVMVoidTypeInContext(ctx), &params, 6, 0))!
        // cblas_sgemm(order, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc); enums and blasint are 32-bit.
        var blasParams: [LLVMTypeRef?] = [i32, i32, i32, i32, i32, i32, f32, ptr, i32, ptr, i32, f32, ptr, i32]
        let blasType = LLVMFunctionType(LLVMVoidTypeInContext(ctx), &blasParams, UInt32(blasParams.count), 0)!
        let sgemm = LLVMGetNamedFunction(module, "cblas_sgemm") ?? LLVMAddFunction(module, "cblas_sgemm", blasType)
        let b = LLVMCreateBuilderInContext(ctx)!
        defer { LLVMDisposeBuilder(b) }
        LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(ctx, fn, "entry"))
        let (c, a, bm) = (LLVMGetParam(fn, 0), LLVMGetParam(fn, 1), LLVMGetParam(fn, 2))
        let (m, n, k) = (LLVMGetParam(fn, 3), LLVMGetParam(fn, 4), LLVMGetParam(fn, 5))
        func int(_ v: Int) -> LLVMValueRef { LLVMConstInt(i32, UInt64(v), 0) }
        let rowMajor = 101, noTrans = 111, trans = 112
        var args: [LLVMValueRef?] = [
            int(rowMajor), int(transposeA ? trans : noTrans), int(transposeB ? trans : noTrans), m, n, k,
            LLVMConstReal(f32, 1), a, transposeA ? m : k, bm, transposeB ? k : n, LLVMConstReal(f32, 0), c, n,
        ]
        LLVMBuildCall2(b, blasType, sgemm, &args, UInt32(args.count), "")
        LLVMBuildRetVoid(b)
    }
}
