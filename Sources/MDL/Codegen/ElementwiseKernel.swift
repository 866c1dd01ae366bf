import CLLVM

/// Emits a function made only of elementwise f32 ops (inputs of one shape, rank-0 inputs and
/// filled constants broadcast) as one LLVM loop: `void name(float *out, const float *in..., i64 n)`,
/// every pointer `noalias` so the loop vectorizes. The first piece of the backend; the
/// kernel tests check it against the reference interpreter.
struct ElementwiseKernel {
    struct Unsupported: Error, CustomStringConvertible { let description: String }

    let function: Function

    /// The argument values that are scalars (read at index 0) rather than arrays.
    var scalarInputs: [Bool] { function.arguments.map { function.type(of: $0).rank == 0 } }

    func emit(name: String, into module: LLVMModuleRef, context ctx: LLVMContextRef) throws {
        let f = function
        guard f.resultTypes.count == 1, f.resultTypes[0].dtype == .f32 else { throw Unsupported(description: "an elementwise kernel has one f32 result") }
        for a in f.arguments where f.type(of: a).dtype != .f32 { throw Unsupported(description: "inputs must be f32") }
        let f32 = LLVMFloatTypeInContext(ctx)!, i64 = LLVMInt64TypeInContext(ctx)!, ptr = LLVMPointerTypeInContext(ctx, 0)!
        var params = [LLVMTypeRef?](repeating: ptr, count: f.arguments.count + 1) + [i64]
        let fnType = LLVMFunctionType(LLVMVoidTypeInContext(ctx), &params, UInt32(params.count), 0)
        let fn = LLVMAddFunction(module, name, fnType)!
        markNoAlias(fn, parameters: Array(0...f.arguments.count), context: ctx)

        let entry = LLVMAppendBasicBlockInContext(ctx, fn, "entry"), loop = LLVMAppendBasicBlockInContext(ctx, fn, "loop"),
            exit = LLVMAppendBasicBlockInContext(ctx, fn, "exit")
        let b = LLVMCreateBuilderInContext(ctx)!
        defer { LLVMDisposeBuilder(b) }
        LLVMPositionBuilderAtEnd(b, entry)
        let n = LLVMGetParam(fn, UInt32(f.arguments.count + 1))
        let zero = LLVMConstInt(i64, 0, 0)
        LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSGT, n, zero, "nonempty"), loop, exit)

        LLVMPositionBuilderAtEnd(b, loop)
        let i = LLVMBuildPhi(b, i64, "i")!
        var values: [Int: LLVMValueRef] = [:]
        for (k, a) in f.arguments.enumerated() {
            var index: [LLVMValueRef?] = [f.type(of: a).rank == 0 ? zero : i]
            let p = LLVMBuildInBoundsGEP2(b, f32, LLVMGetParam(fn, UInt32(k + 1)), &index, 1, "")
            values[a.id] = LLVMBuildLoad2(b, f32, p, "")
        }
        let math = Math(module: module, builder: b, f32: f32)
        for op in f.body.operations {
            if op.op == .return {
                var index: [LLVMValueRef?] = [i]
                let p = LLVMBuildInBoundsGEP2(b, f32, LLVMGetParam(fn, 0), &index, 1, "")
                LLVMBuildStore(b, values[op.operands[0].id], p)
                continue
            }
            guard f.type(of: op.results[0]).dtype == .f32 else { throw Unsupported(description: "'\(op.op.name)' is not an f32 elementwise op") }
            let x = op.operands.map { values[$0.id]! }
            values[op.results[0].id] = try math.apply(op, x)
        }
        closeCountedLoop(b, index: i, bound: n, header: loop, preheader: entry, exit: exit)
        LLVMPositionBuilderAtEnd(b, exit)
        LLVMBuildRetVoid(b)
    }

    /// Scalar f32 code for each elementwise op: LLVM intrinsics where they exist, libm otherwise.
    struct Math {
        let module: LLVMModuleRef
        let builder: LLVMBuilderRef
        let f32: LLVMTypeRef

        func call(_ name: String, _ args: [LLVMValueRef]) -> LLVMValueRef {
            var types = [LLVMTypeRef?](repeating: f32, count: args.count)
            let type = LLVMFunctionType(f32, &types, UInt32(args.count), 0)
            let fn = LLVMGetNamedFunction(module, name) ?? LLVMAddFunction(module, name, type)
            var a: [LLVMValueRef?] = args
            return LLVMBuildCall2(builder, type, fn, &a, UInt32(args.count), "")
        }
        func c(_ v: Double) -> LLVMValueRef { LLVMConstReal(f32, v) }
        func add(_ a: LLVMValueRef, _ b: LLVMValueRef) -> LLVMValueRef { LLVMBuildFAdd(builder, a, b, "") }
        func sub(_ a: LLVMValueRef, _ b: LLVMValueRef) -> LLVMValueRef { LLVMBuildFSub(builder, a, b, "") }
        func mul(_ a: LLVMValueRef, _ b: LLVMValueRef) -> LLVMValueRef { LLVMBuildFMul(builder, a, b, "") }
        func div(_ a: LLVMValueRef, _ b: LLVMValueRef) -> LLVMValueRef { LLVMBuildFDiv(builder, a, b, "") }
        func select(_ pred: LLVMRealPredicate, _ a: LLVMValueRef, _ b: LLVMValueRef, _ t: LLVMValueRef, _ e: LLVMValueRef) -> LLVMValueRef {
            LLVMBuildSelect(builder, LLVMBuildFCmp(builder, pred, a, b, ""), t, e, "")
        }
        func sigmoid(_ x: LLVMValueRef) -> LLVMValueRef { div(c(1), add(c(1), call("llvm.exp.f32", [LLVMBuildFNeg(builder, x, "")]))) }

        func apply(_ op: Operation, _ x: [LLVMValueRef]) throws -> LLVMValueRef {
            switch op.op {
            case .constant:
                guard let v = op.attrs["value"]?.doubleValue else { throw Unsupported(description: "only filled constants") }
                return c(v)
            case .neg: return LLVMBuildFNeg(builder, x[0], "")
            case .abs: return call("llvm.fabs.f32", x)
            case .exp: return call("llvm.exp.f32", x)
            case .log: return call("llvm.log.f32", x)
            case .sqrt: return call("llvm.sqrt.f32", x)
            case .rsqrt: return div(c(1), call("llvm.sqrt.f32", x))
            case .tanh: return call("tanhf", x)
            case .sigmoid: return sigmoid(x[0])
            case .relu: return select(LLVMRealOGT, x[0], c(0), x[0], c(0))
            case .gelu: return mul(mul(c(0.5), x[0]), add(c(1), call("erff", [mul(x[0], c(1 / 2.0.squareRoot()))])))
            case .silu: return mul(x[0], sigmoid(x[0]))
            case .softplus:
                let tail = call("log1pf", [call("llvm.exp.f32", [LLVMBuildFNeg(builder, call("llvm.fabs.f32", x), "")])])
                return add(call("llvm.maxnum.f32", [x[0], c(0)]), tail)
            case .sin: return call("llvm.sin.f32", x)
            case .cos: return call("llvm.cos.f32", x)
            case .erf: return call("erff", x)
            case .floor: return call("llvm.floor.f32", x)
            case .sign: return select(LLVMRealOGT, x[0], c(0), c(1), select(LLVMRealOLT, x[0], c(0), c(-1), c(0)))
            case .add: return add(x[0], x[1])
            case .sub: return sub(x[0], x[1])
            case .mul: return mul(x[0], x[1])
            case .div: return div(x[0], x[1])
            case .pow: return call("llvm.pow.f32", x)
            case .max: return call("llvm.maxnum.f32", x)
            case .min: return call("llvm.minnum.f32", x)
            case .mod: return sub(x[0], mul(x[1], call("llvm.floor.f32", [div(x[0], x[1])])))
            default: throw Unsupported(description: "'\(op.op.name)' is not elementwise")
            }
        }
    }
}
