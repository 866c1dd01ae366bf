/// Lowering: Graph IR functions to Kernel IR entry functions. Every op becomes one kernel
/// (loop nests, or BLAS calls for matrix products) over buffers; shape-only ops (reshape,
/// stop_gradient) and globals are views of existing buffers; run-time loops become `Step.loop`.
/// A transpose that only feeds matrix products is folded into their GEMMs (flags, strides)
/// instead of being computed.
public enum Lowering {
    public struct Failure: Error, CustomStringConvertible { public let description: String }

    /// `fusion` false: every op its own kernel and every transpose computed (the reference the
    /// fused program is tested against; `mdlc dump-ir --after lower`).
    static func run(_ module: Module, fusion: Bool = true) throws -> KernelProgram {
        let globalIndex = Dictionary(module.globals.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { a, _ in a })
        var functions: [EntryFunction] = []
        for f in module.functions {
            var l = FunctionLowering(function: f, module: module, globalIndex: globalIndex)
            l.fusion = fusion
            functions.append(try l.lower())
        }
        return KernelProgram(module: module, functions: functions)
    }
}

/// The lowering of one function.
struct FunctionLowering {
    let function: Function
    let module: Module
    let globalIndex: [String: Int]
    var buffers: [BufferInfo] = []
    var bufferOf: [Int: BufferID] = [:]
    var opTexts: [String] = []
    var kernelCount = 0
    /// Transposes read in place by their one kind of consumer (matrix products through the GEMM
    /// flags and strides, weight-gradient convolutions image by image): result value -> source value.
    var foldedTransposes: [Int: Value] = [:]
    var pendingGlobalWrites: [(global: BufferID, value: BufferID)] = []
    /// Values computed inline by their consumers' kernels (Fusion.swift), and every value's op.
    var fused: Set<Int> = []
    var producers: [Int: Operation] = [:]
    /// Sums whose kernel computes the matmul they reduce (Fusion.swift).
    var summedProducts: Set<Int> = []
    /// Transposes whose kernel computes the batched matmul they read, writing its matrices in
    /// place in the transposed layout (Fusion.swift): transpose result value -> the matmul.
    var transposedProducts: [Int: Operation] = [:]
    /// Epilogues by the value of the kernel that computes them (Fusion.swift), and while that
    /// kernel is lowered, where its chain reads the product's value.
    var epilogues: [Int: Epilogue] = [:]
    var epilogueLeaf: (value: Int, element: LeafElement)?
    /// Whether kernels fuse (Fusion.swift); off, every op is its own kernel.
    var fusion = true
    /// Scratch buffers the op being lowered needs for the duration of its kernel.
    var scratchBuffers: [BufferID] = []
    /// The kernels of `update`: result buffer -> the buffer it is a copy of, but for one slice (InPlace.swift).
    var sliceUpdates: [BufferID: BufferID] = [:]

    init(function: Function, module: Module, globalIndex: [String: Int]) {
        self.function = function
        self.module = module
        self.globalIndex = globalIndex
    }

    func fail(_ message: String) -> Lowering.Failure { Lowering.Failure(description: "@\(function.name): \(message)") }

    mutating func newBuffer(_ name: String, _ type: TensorType, role: BufferRole = .temporary) -> BufferID {
        buffers.append(BufferInfo(name: name, dtype: type.dtype, shape: type.shape, role: role))
        return BufferID(id: buffers.count - 1)
    }

    mutating func lower() throws -> EntryFunction {
        let f = function
        var inputs: [BufferID] = [], inputNames: [String] = []
        var hasKey = false
        var inputPosition = 0
        for a in f.arguments {
            let name = f.names[a.id] ?? "arg\(a.id)"
            if name == "key" && a == f.arguments.last && f.type(of: a) == TensorType(.i32, []) {
                bufferOf[a.id] = newBuffer("key", f.type(of: a), role: .key)
                hasKey = true
                continue
            }
            let b = newBuffer(name, f.type(of: a), role: .input(inputPosition))
            inputPosition += 1
            bufferOf[a.id] = b
            inputs.append(b)
            inputNames.append(name)
        }
        // Symbolic sizes: bound by the first input axis that is exactly that symbol.
        var bindings: [(symbol: String, input: Int, axis: Int)] = []
        var bound = Set<String>()
        for (i, b) in inputs.enumerated() {
            for (axis, d) in buffers[b.id].shape.enumerated() {
                if let s = d.singleSymbol, !bound.contains(s) { bound.insert(s); bindings.append((s, i, axis)) }
            }
        }
        var symbols = Set<String>()
        func collect(_ block: Block) {
            for a in block.arguments { for d in f.type(of: a).shape { symbols.formUnion(d.symbols) } }
            for op in block.operations {
                for r in op.results { for d in f.type(of: r).shape { symbols.formUnion(d.symbols) } }
                for case .dim(let d) in op.attrs.values { symbols.formUnion(d.symbols) }
                for case .list(let items) in op.attrs.values { for case .dim(let d) in items { symbols.formUnion(d.symbols) } }
                op.regions.forEach(collect)
            }
        }
        collect(f.body)
        if let unbound = symbols.subtracting(bound).sorted().first {
            throw fail("the size \(unbound) is not the size of any input axis, so it cannot be known when the function runs")
        }
        planKernels(f.body)
        let (steps, outputs) = try lowerBlock(f.body, top: true)
        return EntryFunction(name: f.name, kind: f.kind, hasKey: hasKey, buffers: buffers, inputs: inputs, inputNames: inputNames,
                             outputs: outputs, outputNames: f.resultTypes.indices.map { i in
                                 i < f.resultNames.count && !f.resultNames[i].isEmpty ? f.resultNames[i] : String(i)
                             }, outputTypes: f.resultTypes, bindings: bindings, symbols: symbols.sorted(),
                             steps: steps, opTexts: opTexts)
    }

    /// Lowers a block; returns its steps (with frees after last uses) and the buffers of its `return`/`yield`.
    mutating func lowerBlock(_ block: Block, top: Bool) throws -> ([Step], [BufferID]) {
        var steps: [Step] = []
        var results: [BufferID] = []
        var allocated: [BufferID] = []
        for op in block.operations {
            switch op.op {
            case .return, .yield:
                results = op.operands.map { bufferOf[$0.id]! }
            case .minimize, .apply_gradients:
                throw fail("'\(op.op.name)' must be removed by autodiff and optimizer lowering before code generation")
            case .global_set:
                guard top else { throw fail("a state update inside a run-time loop is not supported by the code generator") }
                guard case .symbol(let name)? = op.attrs["name"], let g = globalIndex[name] else { throw fail("global.set of an unknown global") }
                pendingGlobalWrites.append((globalBuffer(g), bufferOf[op.operands[0].id]!))
            case .global:
                guard case .symbol(let name)? = op.attrs["name"], let g = globalIndex[name] else { throw fail("unknown global") }
                bufferOf[op.results[0].id] = globalBuffer(g)
            case _ where op.results.count == 1 && fused.contains(op.results[0].id):
                continue
            case .reshape where bufferOf[op.operands[0].id] != nil, .stop_gradient:
                // A view of its operand's buffer (a reshape of a value computed inline computes it).
                bufferOf[op.results[0].id] = bufferOf[op.operands[0].id]!
            case .transpose where foldedTransposes[op.results[0].id] != nil:
                continue
            case .loop:
                let (step, out) = try lowerLoop(op, allocated: &allocated)
                steps.append(step)
                for (r, b) in zip(op.results, out) { bufferOf[r.id] = b }
            default:
                let result = newBuffer(valueName(op.results[0]), function.type(of: op.results[0]))
                bufferOf[op.results[0].id] = result
                steps.append(.alloc(result))
                allocated.append(result)
                opTexts.append(describe(op))
                let kernel = try lowerOp(op, result: result)
                steps += scratchBuffers.map(Step.alloc) + [.kernel(kernel, sourceOp: opTexts.count - 1)] + scratchBuffers.map(Step.free)
                scratchBuffers = []
            }
        }
        updateSlicesInPlace(&steps, allocated: &allocated, results: &results)
        // State updates take effect when the function returns.
        if top {
            let copies = writeInPlace(&steps, allocated: &allocated, results: results)
            if fusion { mergeStateUpdates(&steps) }
            steps += copies.map { .copy(to: $0.global, from: $0.value) }
        }
        if fusion { mergeSiblings(&steps) }
        // Free every temporary of this block after its last use, except what the block returns
        // (a function's results are handed to the caller, a loop body's are copied by the loop).
        let keep = Set(results)
        var lastUse: [BufferID: Int] = [:]
        for (i, s) in steps.enumerated() { for b in s.buffersUsed { lastUse[b] = i } }
        var frees: [Int: [BufferID]] = [:]
        for b in allocated where !keep.contains(b) { frees[lastUse[b] ?? 0, default: []].append(b) }
        var out: [Step] = []
        for (i, s) in steps.enumerated() {
            out.append(s)
            for b in frees[i] ?? [] { out.append(.free(b)) }
        }
        return (out, results)
    }

    mutating func scratch(_ name: String, _ type: TensorType) -> BufferID {
        let b = newBuffer(name, type)
        scratchBuffers.append(b)
        return b
    }

    mutating func globalBuffer(_ g: Int) -> BufferID {
        if let i = buffers.firstIndex(where: { $0.role == .global(g) }) { return BufferID(id: i) }
        let global = module.globals[g]
        return newBuffer(global.name, global.type, role: .global(g))
    }

    func valueName(_ v: Value) -> String { function.names[v.id].map { "\($0)" } ?? "v\(v.id)" }

    /// The Graph IR text of `op` and of the producers fused into it (what --check-numerics reports).
    func describe(_ op: Operation) -> String {
        let operands = op.operands.map { "%" + valueName($0) }.joined(separator: ", ")
        var text = "%\(valueName(op.results[0])) = \(op.op.name) \(operands) : \(function.type(of: op.results[0]))"
        for v in op.operands where fused.contains(v.id) { if let p = producers[v.id] { text += "; computed inline: " + describe(p) } }
        return text
    }

    /// A run-time loop: carried buffers start as copies of the initial values; at the end of
    /// each iteration the yielded values are copied into them (through a temporary when a
    /// yield is itself a carried buffer, so that swaps work) and the body's temporaries freed.
    mutating func lowerLoop(_ op: Operation, allocated: inout [BufferID]) throws -> (Step, [BufferID]) {
        let body = op.regions[0]
        let index = newBuffer(valueName(body.arguments[0]), function.type(of: body.arguments[0]))
        bufferOf[body.arguments[0].id] = index
        var carried: [BufferID] = []
        var setup: [Step] = [.alloc(index)]
        allocated.append(index)
        for (arg, initial) in zip(body.arguments.dropFirst(), op.operands.dropFirst(2)) {
            let c = newBuffer(valueName(arg), function.type(of: arg))
            bufferOf[arg.id] = c
            carried.append(c)
            allocated.append(c)
            setup += [.alloc(c), .copy(to: c, from: bufferOf[initial.id]!)]
        }
        let bodyStart = buffers.count
        var (steps, yields) = try lowerBlock(body, top: false)
        var staged: [BufferID] = []
        for (c, y) in zip(carried, yields) {
            if carried.contains(y) && y != c {
                let t = newBuffer("staged", TensorType(buffers[y.id].dtype, buffers[y.id].shape))
                steps += [.alloc(t), .copy(to: t, from: y)]
                staged.append(t)
            } else {
                staged.append(y)
            }
        }
        for (c, y) in zip(carried, staged) where c != y { steps.append(.copy(to: c, from: y)) }
        for y in Set(staged) where y.id >= bodyStart && buffers[y.id].role == .temporary { steps.append(.free(y)) }
        let loop = Step.loop(index: index, low: bufferOf[op.operands[0].id]!, high: bufferOf[op.operands[1].id]!, body: steps)
        return (.sequence(setup + [loop]), carried)
    }
}

/// A product (matmul, convolution, pooling gradient) computed by the kernel of the elementwise
/// chain that consumes it: a matmul's GEMM accumulates onto `bias` (broadcast into the result
/// first) when the chain starts with adding it; `leaf` is the value the result holds after the product.
struct Epilogue {
    var product: Operation
    var bias: Value?
    var leaf: Int
}

/// Where an epilogue's chain reads its product's element.
enum LeafElement {
    case inPlace(BufferID)     // in the result buffer, at the element's own index
    case given(ScalarExpr)     // an expression the product's loop provides at this element
}

extension Step {
    /// Every buffer a step reads or writes (nested steps included).
    var buffersUsed: [BufferID] {
        switch self {
        case .alloc(let b), .free(let b): return [b]
        case .kernel(let k, _): return k.buffers
        case .copy(let a, let b): return [a, b]
        case .loop(let i, let lo, let hi, let body):
            return [i, lo, hi] + body.flatMap(\.buffersUsed)
        case .sequence(let steps): return steps.flatMap(\.buffersUsed)
        }
    }
}
