import CLLVM

/// LLVM types and helpers shared by the emitters of one module.
final class LLVMContextTypes {
    let ctx: LLVMContextRef
    let module: LLVMModuleRef
    let f32, f64, i1, i8, i32, i64, ptr, void: LLVMTypeRef

    init(module: LLVMModuleRef, context: LLVMContextRef) {
        self.module = module
        ctx = context
        f32 = LLVMFloatTypeInContext(ctx); f64 = LLVMDoubleTypeInContext(ctx)
        i1 = LLVMInt1TypeInContext(ctx); i8 = LLVMInt8TypeInContext(ctx)
        i32 = LLVMInt32TypeInContext(ctx); i64 = LLVMInt64TypeInContext(ctx)
        ptr = LLVMPointerTypeInContext(ctx, 0); void = LLVMVoidTypeInContext(ctx)
    }

    func type(_ t: ScalarType) -> LLVMTypeRef {
        switch t { case .f32: return f32; case .f64: return f64; case .i32: return i32; case .bool: return i1; case .index: return i64 }
    }
    /// In-memory type of a tensor element (bool is a byte).
    func memoryType(_ d: DType) -> LLVMTypeRef { d == .f32 ? f32 : d == .i32 ? i32 : i8 }
    func byteWidth(_ d: DType) -> Int { d == .bool ? 1 : 4 }

    /// A function of the module, declared on first use.
    func function(_ name: String, _ result: LLVMTypeRef, _ params: [LLVMTypeRef]) -> (LLVMValueRef, LLVMTypeRef) {
        var p: [LLVMTypeRef?] = params
        let type = LLVMFunctionType(result, &p, UInt32(p.count), 0)!
        return (LLVMGetNamedFunction(module, name) ?? LLVMAddFunction(module, name, type), type)
    }
    func call(_ b: LLVMBuilderRef, _ name: String, _ result: LLVMTypeRef, _ args: [LLVMValueRef]) -> LLVMValueRef {
        let (fn, type) = function(name, result, args.map { LLVMTypeOf($0) })
        var a: [LLVMValueRef?] = args
        return LLVMBuildCall2(b, type, fn, &a, UInt32(a.count), "")
    }
    func int(_ v: Int, _ t: LLVMTypeRef? = nil) -> LLVMValueRef { LLVMConstInt(t ?? i64, UInt64(bitPattern: Int64(v)), 1) }

    /// `if condition { mdl_set_error(message); return code }` in a function returning i32.
    func failIf(_ condition: LLVMValueRef, code: Int32, message: String, in fn: LLVMValueRef, _ b: LLVMBuilderRef) {
        let bad = LLVMAppendBasicBlockInContext(ctx, fn, "fail"), ok = LLVMAppendBasicBlockInContext(ctx, fn, "ok")
        LLVMBuildCondBr(b, condition, bad, ok)
        LLVMPositionBuilderAtEnd(b, bad)
        _ = call(b, "mdl_set_error", void, [LLVMBuildGlobalStringPtr(b, message, "")])
        LLVMBuildRet(b, int(Int(code), i32))
        LLVMPositionBuilderAtEnd(b, ok)
    }
}

/// Emits one Kernel IR kernel as an LLVM function `i32 name(ptr noalias buffers..., ptr sizes)`
/// returning 0, or the code of a failed `fail` check. Scalars are SSA values; `var`s live in
/// allocas that mem2reg promotes; loops are counted loops from 0.
struct KernelEmitter {
    let t: LLVMContextTypes
    let buffers: [BufferInfo]
    let symbols: [String]

    /// A function `name(ptr noalias buffers..., ptr sizes, extra...)` positioned at its entry,
    /// with the buffers and sizes in scope.
    private func function(_ name: String, _ k: Kernel, result: LLVMTypeRef, extra: [LLVMTypeRef] = []) -> (LLVMValueRef, State) {
        let params = [LLVMTypeRef](repeating: t.ptr, count: k.buffers.count + 1) + extra
        let (fn, _) = t.function(name, result, params)
        LLVMSetVisibility(fn, LLVMHiddenVisibility)
        markNoAlias(fn, parameters: Array(0..<k.buffers.count), context: t.ctx)
        // Kept out of line: inlining thousands of kernels into one entry function makes O3 and
        // instruction selection superlinear, and a kernel per function is what profiles name.
        LLVMAddAttributeAtIndex(fn, UInt32(bitPattern: Int32(LLVMAttributeFunctionIndex)), LLVMCreateEnumAttribute(t.ctx, LLVMGetEnumAttributeKindForName("noinline", 8), 0))
        // Compute-bound kernels take 512-bit vectors where the CPU has them (LLVM prefers 256).
        if k.body.contains(where: \.computesTranscendentals) {
            let (key, value) = ("prefer-vector-width", "512")
            LLVMAddAttributeAtIndex(fn, UInt32(bitPattern: Int32(LLVMAttributeFunctionIndex)), LLVMCreateStringAttribute(t.ctx, key, UInt32(key.utf8.count), value, UInt32(value.utf8.count)))
        }
        let b = LLVMCreateBuilderInContext(t.ctx)!
        LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(t.ctx, fn, "entry"))
        var state = State(fn: fn, builder: b)
        state.kernel = k
        for (i, id) in k.buffers.enumerated() { state.pointers[id.id] = LLVMGetParam(fn, UInt32(i)) }
        let sizes = LLVMGetParam(fn, UInt32(k.buffers.count))!
        state.sizes = sizes
        for (i, s) in symbols.enumerated() {
            var index: [LLVMValueRef?] = [t.int(i)]
            state.scope[s] = (LLVMBuildLoad2(b, t.i64, LLVMBuildInBoundsGEP2(b, t.i64, sizes, &index, 1, ""), s), .index)
        }
        return (fn, state)
    }

    /// Defines `k` as a function of the module, named as the kernel.
    func define(_ k: Kernel) -> LLVMValueRef {
        var (fn, state) = function(k.name, k, result: t.i32)
        defer { LLVMDisposeBuilder(state.builder) }
        emit(k.body, &state)
        LLVMBuildRet(state.builder, t.int(0, t.i32))
        return fn
    }

    /// Elements of work below which a parallel loop runs on the calling thread: the pool's
    /// hand-off costs a few microseconds.
    static let parallelThreshold = 1 << 15

    /// A parallel loop: its body becomes `name.body(buffers..., sizes, lo, hi, captured...)`, called
    /// directly for small extents and otherwise through `mdl_parallel_for` with a trampoline
    /// `name.task(ctx, lo, hi)` that unpacks the kernel's parameters and the captured index
    /// values of enclosing loops from `ctx`. Inside a scope with mutable variables (or non-index
    /// values) it runs as a plain loop.
    private func parallelLoop(_ name: String, _ extent: ScalarExpr, _ body: [KernelStmt], work: Int, _ s: inout State) {
        let captured = s.scope.keys.filter { !symbols.contains($0) }.sorted()
        guard s.variables.isEmpty, captured.allSatisfy({ s.scope[$0]!.1 == .index }) else {
            emit([.loop(name, extent, body)], &s)
            return
        }
        let capturedValues = captured.map { s.scope[$0]!.0 }
        let b = s.builder, k = s.kernel
        let (n, _) = value(extent, &s, as: .index)
        let count = k.buffers.count + 1  // the kernel's buffers and sizes (also the first parameters of a .part function)
        s.parallelLoops += 1
        let serial = "\(LLVMGetValueName2String(s.fn)).part\(s.parallelLoops)"
        var (bodyFn, inner) = function(serial, k, result: t.void, extra: [t.i64, t.i64] + captured.map { _ in t.i64 })
        defer { LLVMDisposeBuilder(inner.builder) }
        let lo = LLVMGetParam(bodyFn, UInt32(count))!, hi = LLVMGetParam(bodyFn, UInt32(count + 1))!
        let capturedParams = captured.indices.map { (captured[$0], LLVMGetParam(bodyFn, UInt32(count + 2 + $0))!) }
        emit([.loop(name + ".offset", .variable(name + ".span"), [.bind(name, .binary(.add, .variable(name + ".lo"), .variable(name + ".offset")))] + body)],
             &inner, bindings: [(name + ".lo", lo), (name + ".span", LLVMBuildSub(inner.builder, hi, lo, "")!)] + capturedParams)
        LLVMBuildRetVoid(inner.builder)

        // The trampoline: ctx is an array of the kernel's parameters, then the captured values.
        let (task, _) = t.function(serial + ".task", t.void, [t.ptr, t.i64, t.i64])
        LLVMSetVisibility(task, LLVMHiddenVisibility)
        let tb = LLVMCreateBuilderInContext(t.ctx)!
        defer { LLVMDisposeBuilder(tb) }
        LLVMPositionBuilderAtEnd(tb, LLVMAppendBasicBlockInContext(t.ctx, task, "entry"))
        func slot(_ i: Int) -> LLVMValueRef {
            var index: [LLVMValueRef?] = [t.int(i)]
            return LLVMBuildLoad2(tb, t.ptr, LLVMBuildInBoundsGEP2(tb, t.ptr, LLVMGetParam(task, 0), &index, 1, ""), "")!
        }
        let unpacked: [LLVMValueRef] = (0..<count).map(slot) + [LLVMGetParam(task, 1)!, LLVMGetParam(task, 2)!]
            + captured.indices.map { LLVMBuildPtrToInt(tb, slot(count + $0), t.i64, "")! }
        _ = t.call(tb, serial, t.void, unpacked)
        LLVMBuildRetVoid(tb)

        // In the kernel: enough work goes to the pool, the rest runs here.
        let pooled = LLVMAppendBasicBlockInContext(t.ctx, s.fn, "pooled"), direct = LLVMAppendBasicBlockInContext(t.ctx, s.fn, "direct"),
            done = LLVMAppendBasicBlockInContext(t.ctx, s.fn, "parallel.end")
        let large = LLVMBuildICmp(b, LLVMIntSGE, LLVMBuildMul(b, n, t.int(work), ""), t.int(Self.parallelThreshold), "")
        LLVMBuildCondBr(b, large, pooled, direct)
        LLVMPositionBuilderAtEnd(b, pooled)
        let ctx = entryAlloca(LLVMArrayType2(t.ptr, UInt64(count + captured.count)), "ctx", s)
        let packed: [LLVMValueRef] = (0..<count).map { LLVMGetParam(s.fn, UInt32($0))! } + capturedValues.map { LLVMBuildIntToPtr(b, $0, t.ptr, "")! }
        for (i, v) in packed.enumerated() {
            var index: [LLVMValueRef?] = [t.int(i)]
            LLVMBuildStore(b, v, LLVMBuildInBoundsGEP2(b, t.ptr, ctx, &index, 1, ""))
        }
        _ = t.call(b, "mdl_parallel_for", t.void, [n, task, ctx])
        LLVMBuildBr(b, done)
        LLVMPositionBuilderAtEnd(b, direct)
        _ = t.call(b, serial, t.void, (0..<count).map { LLVMGetParam(s.fn, UInt32($0))! } + [t.int(0), n] + capturedValues)
        LLVMBuildBr(b, done)
        LLVMPositionBuilderAtEnd(b, done)
    }

    struct State {
        let fn: LLVMValueRef
        let builder: LLVMBuilderRef
        var kernel = Kernel(name: "", buffers: [], body: [])
        var sizes: LLVMValueRef?
        var parallelLoops = 0
        var pointers: [Int: LLVMValueRef] = [:]
        /// Sizes, loop indices and `let`s: SSA values with their scalar type.
        var scope: [String: (LLVMValueRef, ScalarType)] = [:]
        /// `var`s: allocas with their scalar type.
        var variables: [String: (LLVMValueRef, ScalarType)] = [:]
    }

    func emit(_ stmts: [KernelStmt], _ s: inout State, bindings: [(String, LLVMValueRef)] = []) {
        let b = s.builder
        for (name, v) in bindings { s.scope[name] = (v, .index) }
        for st in stmts {
            switch st {
            case .parallel(let name, let extent, let body, let work):
                parallelLoop(name, extent, body, work: work, &s)
            case .loop(let name, let extent, let body):
                let (n, _) = value(extent, &s, as: .index)
                let preheader = LLVMGetInsertBlock(b)
                let header = LLVMAppendBasicBlockInContext(t.ctx, s.fn, name), exit = LLVMAppendBasicBlockInContext(t.ctx, s.fn, name + ".end")
                LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSGT, n, t.int(0), ""), header, exit)
                LLVMPositionBuilderAtEnd(b, header)
                let i = LLVMBuildPhi(b, t.i64, name)!
                let saved = s.scope
                s.scope[name] = (i, .index)
                emit(body, &s)
                s.scope = saved
                closeCountedLoop(b, index: i, bound: n, header: header, preheader: preheader, exit: exit)
                LLVMPositionBuilderAtEnd(b, exit)
            case .store(let buffer, let index, let v):
                let dtype = buffers[buffer.id].dtype
                var (x, xt) = value(v, &s)
                x = convert(x, from: xt, to: ScalarType(dtype), b)
                if dtype == .bool { x = LLVMBuildZExt(b, x, t.i8, "") }
                LLVMBuildStore(b, x, address(buffer, index, &s))
            case .bind(let name, let e):
                s.scope[name] = value(e, &s)
            case .declare(let name, let e):
                let (x, xt) = value(e, &s)
                let slot = entryAlloca(t.type(xt), name, s)
                LLVMBuildStore(b, x, slot)
                s.variables[name] = (slot, xt)
            case .assign(let name, let e):
                let (slot, vt) = s.variables[name]!
                let (x, xt) = value(e, &s)
                LLVMBuildStore(b, convert(x, from: xt, to: vt, b), slot)
            case .accumulate(let name, let op, let e):
                let (slot, vt) = s.variables[name]!
                let (x, xt) = value(e, &s)
                let current = LLVMBuildLoad2(b, t.type(vt), slot, name)!
                let r = binary(op, current, convert(x, from: xt, to: vt, b), vt, b)
                // Reductions may reassociate: the one place fast-math flags are set, so sums vectorize.
                // max/min also promise no NaN (a NaN operand then gives any value, not NaN), without
                // which LLVM keeps their reductions scalar; softmax's max row still sends a NaN logit
                // through exp(x - max) to its result.
                if vt == .f32 || vt == .f64 {
                    if op == .add { LLVMSetFastMathFlags(r, LLVMFastMathFlags(LLVMFastMathAllowReassoc | LLVMFastMathNoSignedZeros)) }
                    if op == .max || op == .min { LLVMSetFastMathFlags(r, LLVMFastMathFlags(LLVMFastMathAllowReassoc | LLVMFastMathNoSignedZeros | LLVMFastMathNoNaNs)) }
                }
                LLVMBuildStore(b, r, slot)
            case .when(let c, let body):
                let (cond, ct) = value(c, &s)
                let then = LLVMAppendBasicBlockInContext(t.ctx, s.fn, "then"), done = LLVMAppendBasicBlockInContext(t.ctx, s.fn, "endif")
                LLVMBuildCondBr(b, convert(cond, from: ct, to: .bool, b), then, done)
                LLVMPositionBuilderAtEnd(b, then)
                let saved = s.scope
                emit(body, &s)
                s.scope = saved
                LLVMBuildBr(b, done)
                LLVMPositionBuilderAtEnd(b, done)
            case .fail(let c, let code, let message):
                let (cond, ct) = value(c, &s)
                t.failIf(convert(cond, from: ct, to: .bool, b), code: code, message: message, in: s.fn, b)
            case .gemm(let g):
                gemm(g, &s)
            }
        }
    }

    func entryAlloca(_ type: LLVMTypeRef, _ name: String, _ s: State) -> LLVMValueRef {
        let b = LLVMCreateBuilderInContext(t.ctx)!
        defer { LLVMDisposeBuilder(b) }
        let entry = LLVMGetEntryBasicBlock(s.fn)
        if let first = LLVMGetFirstInstruction(entry) { LLVMPositionBuilderBefore(b, first) } else { LLVMPositionBuilderAtEnd(b, entry) }
        return LLVMBuildAlloca(b, type, name)
    }

    func address(_ buffer: BufferID, _ index: ScalarExpr, _ s: inout State) -> LLVMValueRef {
        let (i, _) = value(index, &s, as: .index)
        var idx: [LLVMValueRef?] = [i]
        return LLVMBuildInBoundsGEP2(s.builder, t.memoryType(buffers[buffer.id].dtype), s.pointers[buffer.id]!, &idx, 1, "")
    }

    /// mdl_sgemm(transA, transB, M, N, K, A, lda, B, ldb, beta, C, ldc) (the runtime's row-major
    /// product over the thread pool; it returns at once when C is empty).
    func gemm(_ g: Gemm, _ s: inout State) {
        let b = s.builder
        func size(_ e: ScalarExpr) -> LLVMValueRef { value(e, &s, as: .index).0 }
        let m = size(g.m), n = size(g.n), k = size(g.k)
        let a = address(g.a, g.aOffset, &s), bm = address(g.b, g.bOffset, &s), c = address(g.c, g.cOffset, &s)
        func atLeastOne(_ v: LLVMValueRef) -> LLVMValueRef { LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, v, t.int(1), ""), t.int(1), v, "") }
        let args: [LLVMValueRef] = [
            t.int(g.transposeA ? 1 : 0, t.i32), t.int(g.transposeB ? 1 : 0, t.i32), m, n, k,
            a, atLeastOne(size(g.lda)), bm, atLeastOne(size(g.ldb)),
            LLVMConstReal(t.f32, g.accumulate ? 1 : 0), c, atLeastOne(size(g.ldc)),
        ]
        _ = t.call(b, "mdl_sgemm", t.void, args)
    }

    func value(_ e: ScalarExpr, _ s: inout State, as wanted: ScalarType) -> (LLVMValueRef, ScalarType) {
        let (v, vt) = value(e, &s)
        return (convert(v, from: vt, to: wanted, s.builder), wanted)
    }

    func value(_ e: ScalarExpr, _ s: inout State) -> (LLVMValueRef, ScalarType) {
        let b = s.builder
        switch e {
        case .index(let i): return (t.int(i), .index)
        case .constant(let v, let ty):
            switch ty {
            case .f32, .f64: return (LLVMConstReal(t.type(ty), v), ty)
            case .bool: return (LLVMConstInt(t.i1, v != 0 ? 1 : 0, 0), ty)
            case .i32, .index: return (t.int(Int(v), t.type(ty)), ty)
            }
        case .size(let name), .variable(let name):
            if let v = s.scope[name] { return v }
            let (slot, vt) = s.variables[name]!
            return (LLVMBuildLoad2(b, t.type(vt), slot, name), vt)
        case .load(let buffer, let index):
            let dtype = buffers[buffer.id].dtype
            let raw = LLVMBuildLoad2(b, t.memoryType(dtype), address(buffer, index, &s), "")!
            return dtype == .bool ? (LLVMBuildICmp(b, LLVMIntNE, raw, LLVMConstInt(t.i8, 0, 0), ""), .bool) : (raw, ScalarType(dtype))
        case .unary(let op, let x):
            let (v, vt) = value(x, &s)
            return unary(op, v, vt, b)
        case .binary(let op, let x, let y):
            var (u, ut) = value(x, &s)
            var (v, vt) = value(y, &s)
            let common = ScalarType.common(ut, vt)
            u = convert(u, from: ut, to: common, b); v = convert(v, from: vt, to: common, b)
            ut = common; vt = common
            if let pred = comparison(op, ut) {
                let r = ut == .f32 || ut == .f64 ? LLVMBuildFCmp(b, LLVMRealPredicate(pred), u, v, "")! : LLVMBuildICmp(b, LLVMIntPredicate(pred), u, v, "")!
                return (r, .bool)
            }
            return (binary(op, u, v, ut, b), ut)
        case .select(let c, let x, let y):
            let (cond, ct) = value(c, &s)
            var (u, ut) = value(x, &s)
            var (v, vt) = value(y, &s)
            let common = ScalarType.common(ut, vt)
            u = convert(u, from: ut, to: common, b); v = convert(v, from: vt, to: common, b)
            return (LLVMBuildSelect(b, convert(cond, from: ct, to: .bool, b), u, v, ""), common)
        case .convert(let x, let to):
            let (v, vt) = value(x, &s)
            return (convert(v, from: vt, to: to, b), to)
        case .call(let op, let args):
            let values = args.map { value($0, &s) }
            return random(op, values, b)
        case .table(let values, let ty, let index):
            let element = t.type(ty == .bool ? .i32 : ty)
            var consts: [LLVMValueRef?] = values.map { v in
                ty == .f32 || ty == .f64 ? LLVMConstReal(element, v) : t.int(exactInt(v) ?? 0, element)
            }
            let arrayType = LLVMArrayType2(element, UInt64(consts.count))!
            let global = LLVMAddGlobal(t.module, arrayType, "table")!
            LLVMSetInitializer(global, LLVMConstArray2(element, &consts, UInt64(consts.count)))
            LLVMSetGlobalConstant(global, 1)
            LLVMSetLinkage(global, LLVMPrivateLinkage)
            let (i, _) = value(index, &s, as: .index)
            var idx: [LLVMValueRef?] = [i]
            let loaded = LLVMBuildLoad2(b, element, LLVMBuildInBoundsGEP2(b, element, global, &idx, 1, ""), "")!
            return ty == .bool ? (LLVMBuildICmp(b, LLVMIntNE, loaded, t.int(0, t.i32), ""), .bool) : (loaded, ty)
        }
    }

    func isFloat(_ ty: ScalarType) -> Bool { ty == .f32 || ty == .f64 }

    /// LLVM predicate (real or integer) of a comparison, or nil for other ops.
    func comparison(_ op: ScalarOp, _ ty: ScalarType) -> UInt32? {
        let real: [ScalarOp: LLVMRealPredicate] = [.eq: LLVMRealOEQ, .ne: LLVMRealUNE, .lt: LLVMRealOLT, .le: LLVMRealOLE, .gt: LLVMRealOGT, .ge: LLVMRealOGE]
        let int: [ScalarOp: LLVMIntPredicate] = [.eq: LLVMIntEQ, .ne: LLVMIntNE, .lt: LLVMIntSLT, .le: LLVMIntSLE, .gt: LLVMIntSGT, .ge: LLVMIntSGE]
        if isFloat(ty) { return real[op]?.rawValue }
        return int[op]?.rawValue
    }

    func intrinsic(_ name: String, _ ty: ScalarType, _ args: [LLVMValueRef], _ b: LLVMBuilderRef) -> LLVMValueRef {
        t.call(b, "llvm.\(name).\(ty == .f64 ? "f64" : ty == .f32 ? "f32" : ty == .i32 ? "i32" : "i64")", t.type(ty), args)
    }
    func libm(_ name: String, _ ty: ScalarType, _ args: [LLVMValueRef], _ b: LLVMBuilderRef) -> LLVMValueRef {
        t.call(b, ty == .f32 ? name + "f" : name, t.type(ty), args)
    }

    func unary(_ op: ScalarOp, _ x: LLVMValueRef, _ ty: ScalarType, _ b: LLVMBuilderRef) -> (LLVMValueRef, ScalarType) {
        if ty == .bool { return (op == .not ? LLVMBuildNot(b, x, "") : x, .bool) }
        if !isFloat(ty) {
            let zero = t.int(0, t.type(ty))
            switch op {
            case .neg: return (LLVMBuildNeg(b, x, ""), ty)
            case .abs: return (LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, x, zero, ""), LLVMBuildNeg(b, x, ""), x, ""), ty)
            case .sign:
                let pos = LLVMBuildZExt(b, LLVMBuildICmp(b, LLVMIntSGT, x, zero, ""), t.type(ty), "")!
                let neg = LLVMBuildZExt(b, LLVMBuildICmp(b, LLVMIntSLT, x, zero, ""), t.type(ty), "")!
                return (LLVMBuildSub(b, pos, neg, ""), ty)
            case .relu: return (LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSGT, x, zero, ""), x, zero, ""), ty)
            default:
                // Other math on integers goes through f64, as the reference interpreter computes it.
                let (r, _) = unary(op, convert(x, from: ty, to: .f64, b), .f64, b)
                return (convert(r, from: .f64, to: ty, b), ty)
            }
        }
        func c(_ v: Double) -> LLVMValueRef { LLVMConstReal(t.type(ty), v) }
        func sigmoid(_ v: LLVMValueRef) -> LLVMValueRef {
            LLVMBuildFDiv(b, c(1), LLVMBuildFAdd(b, c(1), exp(LLVMBuildFNeg(b, v, "")!, ty, b), ""), "")
        }
        let r: LLVMValueRef
        switch op {
        case .neg: r = LLVMBuildFNeg(b, x, "")
        case .abs: r = intrinsic("fabs", ty, [x], b)
        case .exp: r = exp(x, ty, b)
        case .log: r = intrinsic("log", ty, [x], b)
        case .sqrt: r = intrinsic("sqrt", ty, [x], b)
        case .rsqrt: r = LLVMBuildFDiv(b, c(1), intrinsic("sqrt", ty, [x], b), "")
        case .tanh: r = tanh(x, ty, b)
        case .sigmoid: r = sigmoid(x)
        case .relu: r = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOGT, x, c(0), ""), x, c(0), "")
        case .gelu: r = LLVMBuildFMul(b, LLVMBuildFMul(b, c(0.5), x, ""), LLVMBuildFAdd(b, c(1), erf(LLVMBuildFMul(b, x, c(1 / 2.0.squareRoot()), ""), ty, b), ""), "")
        case .silu: r = LLVMBuildFMul(b, x, sigmoid(x), "")
        case .softplus:
            let tail = libm("log1p", ty, [exp(LLVMBuildFNeg(b, intrinsic("fabs", ty, [x], b), "")!, ty, b)], b)
            r = LLVMBuildFAdd(b, intrinsic("maxnum", ty, [x, c(0)], b), tail, "")
        case .sin: r = intrinsic("sin", ty, [x], b)
        case .cos: r = intrinsic("cos", ty, [x], b)
        case .erf: r = erf(x, ty, b)
        case .floor: r = intrinsic("floor", ty, [x], b)
        case .sign:
            let pos = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOGT, x, c(0), ""), c(1), c(0), "")
            r = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOLT, x, c(0), ""), c(-1), pos, "")
        case .isFinite:
            return (LLVMBuildFCmp(b, LLVMRealOLT, intrinsic("fabs", ty, [x], b), c(.infinity), ""), .bool)
        default: r = x
        }
        return (r, ty)
    }

    /// exp in f32 inline (Cephes' expf: x = n ln 2 + r with |r| <= ln 2 / 2, a degree-7
    /// polynomial for exp(r) in fused multiply-adds, then 2^n in two factors so that results down to subnormals are
    /// right; relative error about 1 ulp), so that loops containing it vectorize; libm's expf
    /// is a scalar call. NaN passes through; large x gives infinity, very negative x zero. f64 uses libm.
    func exp(_ x: LLVMValueRef, _ ty: ScalarType, _ b: LLVMBuilderRef) -> LLVMValueRef {
        guard ty == .f32 else { return intrinsic("exp", ty, [x], b) }
        func c(_ v: Double) -> LLVMValueRef { LLVMConstReal(t.f32, v) }
        let clamped = intrinsic("maxnum", ty, [intrinsic("minnum", ty, [x, c(89)], b), c(-104)], b)
        let n = intrinsic("floor", ty, [LLVMBuildFAdd(b, LLVMBuildFMul(b, clamped, c(1.44269504088896341), ""), c(0.5), "")], b)
        var r = LLVMBuildFSub(b, clamped, LLVMBuildFMul(b, n, c(0.693359375), ""), "")!
        r = LLVMBuildFSub(b, r, LLVMBuildFMul(b, n, c(-2.12194440e-4), ""), "")!
        var p = c(1.9875691500e-4)
        for k in [1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1] {
            p = intrinsic("fma", ty, [p, r, c(k)], b)
        }
        let y = LLVMBuildFAdd(b, LLVMBuildFAdd(b, LLVMBuildFMul(b, LLVMBuildFMul(b, p, r, ""), r, ""), r, ""), c(1), "")!
        let e = LLVMBuildFPToSI(b, n, t.i32, "")!
        let half = LLVMBuildAShr(b, e, t.int(1, t.i32), "")!
        func power(_ k: LLVMValueRef) -> LLVMValueRef {
            LLVMBuildBitCast(b, LLVMBuildShl(b, LLVMBuildAdd(b, k, t.int(127, t.i32), ""), t.int(23, t.i32), ""), t.f32, "")
        }
        let scaled = LLVMBuildFMul(b, LLVMBuildFMul(b, y, power(half), ""), power(LLVMBuildSub(b, e, half, "")), "")!
        return LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealUNO, x, x, ""), x, scaled, "")
    }

    /// tanh in f32 as a rational function of x clamped to [-7.9, 7.9] (the approximation Eigen and
    /// XLA use; polynomials in fused multiply-adds), x itself below 4e-4 and +-1 from 9 on, where
    /// tanhf is 1; inline so that loops containing it vectorize: libm's tanhf is a scalar call,
    /// about 20 ns an element. NaN passes through. f64 uses libm.
    func tanh(_ x: LLVMValueRef, _ ty: ScalarType, _ b: LLVMBuilderRef) -> LLVMValueRef {
        guard ty == .f32 else { return libm("tanh", ty, [x], b) }
        func c(_ v: Double) -> LLVMValueRef { LLVMConstReal(t.f32, v) }
        let ratio = oddRational(x, bound: 7.90531110763549805,
                                [-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11, 5.12229709037114e-08,
                                 1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03],
                                [1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03], b)
        let magnitude = intrinsic("fabs", ty, [x], b)
        let tiny = LLVMBuildFCmp(b, LLVMRealOLT, magnitude, c(0.0004), "")!
        let saturated = LLVMBuildFCmp(b, LLVMRealOGE, magnitude, c(9), "")!
        var r = LLVMBuildSelect(b, tiny, x, ratio, "")!
        r = LLVMBuildSelect(b, saturated, intrinsic("copysign", ty, [c(1), x], b), r, "")!
        return LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealUNO, x, x, ""), x, r, "")
    }

    /// erf in f32 as a rational function of x on [-4, 4] (the approximation Eigen and XLA use;
    /// absolute error 7e-8 in exact arithmetic; polynomials in fused multiply-adds), inline so that loops containing it vectorize;
    /// libm's erff is a scalar call. f64 uses libm.
    func erf(_ x: LLVMValueRef, _ ty: ScalarType, _ b: LLVMBuilderRef) -> LLVMValueRef {
        guard ty == .f32 else { return libm("erf", ty, [x], b) }
        return oddRational(x, bound: 4,
                           [-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
                            -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02],
                           [-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03, -1.42647390514189e-02], b)
    }

    /// f32 x * P(x^2) / Q(x^2) with x clamped to [-bound, bound], the polynomials' coefficients
    /// highest power first, evaluated in fused multiply-adds: the form of erf and tanh.
    func oddRational(_ x: LLVMValueRef, bound: Double, _ numerator: [Double], _ denominator: [Double], _ b: LLVMBuilderRef) -> LLVMValueRef {
        func c(_ v: Double) -> LLVMValueRef { LLVMConstReal(t.f32, v) }
        let clamped = intrinsic("maxnum", .f32, [intrinsic("minnum", .f32, [x, c(bound)], b), c(-bound)], b)
        let x2 = LLVMBuildFMul(b, clamped, clamped, "")!
        func horner(_ coefficients: [Double]) -> LLVMValueRef {
            var acc = c(coefficients[0])
            for k in coefficients.dropFirst() { acc = intrinsic("fma", .f32, [acc, x2, c(k)], b) }
            return acc
        }
        let p = LLVMBuildFMul(b, clamped, horner(numerator), "")!
        return LLVMBuildFDiv(b, p, horner(denominator), "")
    }

    func binary(_ op: ScalarOp, _ x: LLVMValueRef, _ y: LLVMValueRef, _ ty: ScalarType, _ b: LLVMBuilderRef) -> LLVMValueRef {
        if ty == .bool { return op == .or ? LLVMBuildOr(b, x, y, "") : op == .and ? LLVMBuildAnd(b, x, y, "") : x }
        if isFloat(ty) {
            switch op {
            case .add: return LLVMBuildFAdd(b, x, y, "")
            case .sub: return LLVMBuildFSub(b, x, y, "")
            case .mul: return LLVMBuildFMul(b, x, y, "")
            case .div: return LLVMBuildFDiv(b, x, y, "")
            case .pow: return intrinsic("pow", ty, [x, y], b)
            case .max: return intrinsic("maxnum", ty, [x, y], b)
            case .min: return intrinsic("minnum", ty, [x, y], b)
            case .mod: return LLVMBuildFSub(b, x, LLVMBuildFMul(b, y, intrinsic("floor", ty, [LLVMBuildFDiv(b, x, y, "")], b), ""), "")
            default: return x
            }
        }
        let lt = t.type(ty), zero = t.int(0, lt)
        switch op {
        case .add: return LLVMBuildAdd(b, x, y, "")
        case .sub: return LLVMBuildSub(b, x, y, "")
        case .mul: return LLVMBuildMul(b, x, y, "")
        case .max: return LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSGT, x, y, ""), x, y, "")
        case .min: return LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, x, y, ""), x, y, "")
        case .div, .mod:
            if ty == .index { return op == .div ? LLVMBuildSDiv(b, x, y, "") : LLVMBuildSRem(b, x, y, "") }
            // i32 tensors: division by zero gives 0; mod takes the divisor's sign (Python's %).
            let isZero = LLVMBuildICmp(b, LLVMIntEQ, y, zero, "")!
            let safe = LLVMBuildSelect(b, isZero, t.int(1, lt), y, "")!
            if op == .div { return LLVMBuildSelect(b, isZero, zero, LLVMBuildSDiv(b, x, safe, ""), "") }
            let r = LLVMBuildSRem(b, x, safe, "")!
            let fix = LLVMBuildAnd(b, LLVMBuildICmp(b, LLVMIntNE, r, zero, ""),
                                   LLVMBuildICmp(b, LLVMIntNE, LLVMBuildICmp(b, LLVMIntSLT, r, zero, ""), LLVMBuildICmp(b, LLVMIntSLT, safe, zero, ""), ""), "")
            return LLVMBuildSelect(b, isZero, zero, LLVMBuildSelect(b, fix, LLVMBuildAdd(b, r, safe, ""), r, ""), "")
        case .pow:
            let r = intrinsic("pow", .f64, [convert(x, from: ty, to: .f64, b), convert(y, from: ty, to: .f64, b)], b)
            return convert(r, from: .f64, to: ty, b)
        default: return x
        }
    }

    func convert(_ x: LLVMValueRef, from: ScalarType, to: ScalarType, _ b: LLVMBuilderRef) -> LLVMValueRef {
        if from == to { return x }
        switch (from, to) {
        case (.bool, .f32), (.bool, .f64): return LLVMBuildUIToFP(b, x, t.type(to), "")
        case (.bool, _): return LLVMBuildZExt(b, x, t.type(to), "")
        case (.f32, .bool), (.f64, .bool): return LLVMBuildFCmp(b, LLVMRealUNE, x, LLVMConstReal(t.type(from), 0), "")
        case (_, .bool): return LLVMBuildICmp(b, LLVMIntNE, x, t.int(0, t.type(from)), "")
        case (.f32, .f64): return LLVMBuildFPExt(b, x, t.f64, "")
        case (.f64, .f32): return LLVMBuildFPTrunc(b, x, t.f32, "")
        case (.f32, _), (.f64, _):
            // Saturating: out-of-range floats clamp instead of being undefined.
            let name = "llvm.fptosi.sat.\(to == .i32 ? "i32" : "i64").\(from == .f32 ? "f32" : "f64")"
            return t.call(b, name, t.type(to), [x])
        case (_, .f32), (_, .f64): return LLVMBuildSIToFP(b, x, t.type(to), "")
        case (.i32, .index): return LLVMBuildSExt(b, x, t.i64, "")
        default: return LLVMBuildTrunc(b, x, t.type(to), "")
        }
    }

    /// The counter-based random numbers of docs/RUNTIME.md, inline.
    func random(_ op: ScalarOp, _ args: [(LLVMValueRef, ScalarType)], _ b: LLVMBuilderRef) -> (LLVMValueRef, ScalarType) {
        func mix(_ x: LLVMValueRef) -> LLVMValueRef {
            var z = LLVMBuildAdd(b, x, LLVMConstInt(t.i64, 0x9E37_79B9_7F4A_7C15, 0), "")!
            z = LLVMBuildMul(b, LLVMBuildXor(b, z, LLVMBuildLShr(b, z, t.int(30), ""), ""), LLVMConstInt(t.i64, 0xBF58_476D_1CE4_E5B9, 0), "")
            z = LLVMBuildMul(b, LLVMBuildXor(b, z, LLVMBuildLShr(b, z, t.int(27), ""), ""), LLVMConstInt(t.i64, 0x94D0_49BB_1331_11EB, 0), "")
            return LLVMBuildXor(b, z, LLVMBuildLShr(b, z, t.int(31), ""), "")
        }
        func keyed(_ key: (LLVMValueRef, ScalarType), _ low: LLVMValueRef) -> LLVMValueRef {
            let k = LLVMBuildShl(b, LLVMBuildZExt(b, convert(key.0, from: key.1, to: .i32, b), t.i64, ""), t.int(32), "")
            return LLVMBuildOr(b, k, LLVMBuildZExt(b, LLVMBuildTrunc(b, low, t.i32, ""), t.i64, ""), "")
        }
        func index(_ v: (LLVMValueRef, ScalarType)) -> LLVMValueRef { convert(v.0, from: v.1, to: .index, b) }
        func bits(_ element: LLVMValueRef) -> LLVMValueRef { mix(LLVMBuildXor(b, mix(keyed(args[0], index(args[1]))), element, "")) }
        func uniform(_ element: LLVMValueRef) -> LLVMValueRef {
            let top = LLVMBuildLShr(b, bits(element), t.int(40), "")
            return LLVMBuildFMul(b, LLVMBuildUIToFP(b, top, t.f64, ""), LLVMConstReal(t.f64, 0x1p-24), "")
        }
        switch op {
        case .rngUniform: return (uniform(index(args[2])), .f64)
        case .rngNormal:
            let i2 = LLVMBuildMul(b, index(args[2]), t.int(2), "")!
            let u1 = uniform(i2), u2 = uniform(LLVMBuildAdd(b, i2, t.int(1), ""))
            let radius = intrinsic("sqrt", .f64, [LLVMBuildFMul(b, LLVMConstReal(t.f64, -2), intrinsic("log", .f64, [LLVMBuildFSub(b, LLVMConstReal(t.f64, 1), u1, "")], b), "")], b)
            return (LLVMBuildFMul(b, radius, intrinsic("cos", .f64, [LLVMBuildFMul(b, LLVMConstReal(t.f64, 2 * Double.pi), u2, "")], b), ""), .f64)
        case .rngBelow: return (LLVMBuildURem(b, bits(index(args[2])), index(args[3]), ""), .index)
        default: // fold
            let folded = mix(keyed(args[0], index(args[1])))
            return (LLVMBuildTrunc(b, LLVMBuildLShr(b, folded, t.int(32), ""), t.i32, ""), .i32)
        }
    }
}

/// The name of an LLVM value.
func LLVMGetValueName2String(_ v: LLVMValueRef) -> String {
    var length = 0
    return String(cString: LLVMGetValueName2(v, &length))
}

extension KernelStmt {
    /// Whether the statement evaluates exp, log, erf or another transcendental function:
    /// compute-bound code, worth the widest vectors.
    var computesTranscendentals: Bool {
        var found = false
        func look(_ e: ScalarExpr) -> ScalarExpr {
            if case .unary(let op, _) = e, [.exp, .log, .tanh, .sigmoid, .gelu, .silu, .softplus, .erf, .sin, .cos].contains(op) { found = true }
            return e.mappingChildren(look)
        }
        switch self {
        case .loop(_, _, let body), .parallel(_, _, let body, _), .when(_, let body): return body.contains(where: \.computesTranscendentals)
        case .store(_, _, let v), .bind(_, let v), .declare(_, let v), .assign(_, let v), .accumulate(_, _, let v): _ = look(v)
        case .fail, .gemm: break
        }
        return found
    }
}
