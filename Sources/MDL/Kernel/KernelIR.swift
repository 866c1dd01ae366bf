/// The Kernel IR: below the Graph IR, a program is loop nests over dense row-major buffers.
/// Each Graph IR function becomes an `EntryFunction`: a list of `Step`s that allocate and free
/// buffers, call kernels (one LLVM function each) and run the Graph IR's run-time loops. A
/// kernel's body is `KernelStmt`s over scalar `ScalarExpr`s; sizes are polynomials of the function's
/// symbolic sizes, known when it is called.

/// A buffer of an entry function, by number.
public struct BufferID: Hashable, Sendable { let id: Int }

/// Where a buffer's storage comes from.
enum BufferRole: Equatable {
    case input(Int)      // the caller's input buffer
    case global(Int)     // a global tensor (module order), read in place
    case key             // the random key argument, an i32 scalar
    case temporary       // allocated by the function, freed after its last use
}

/// A buffer: element type, (symbolic) shape and origin.
struct BufferInfo {
    var name: String
    var dtype: DType
    var shape: [Dim]
    var role: BufferRole
    var count: Dim { shape.reduce(Dim(1), *) }
}

/// Scalar types inside kernels: element types, 64-bit indices and doubles (random numbers).
enum ScalarType: String {
    case f32, i32, bool, index, f64

    /// The scalar type of a tensor element.
    init(_ d: DType) { self = d == .f32 ? .f32 : d == .i32 ? .i32 : .bool }

    /// The type two operands are computed in: the wider float, else the wider integer.
    static func common(_ a: ScalarType, _ b: ScalarType) -> ScalarType {
        let order: [ScalarType] = [.bool, .i32, .index, .f32, .f64]
        return order.firstIndex(of: a)! >= order.firstIndex(of: b)! ? a : b
    }
}

/// Scalar arithmetic of kernels; which ones apply depends on the operand type.
enum ScalarOp: String {
    // unary
    case neg, abs, exp, log, sqrt, rsqrt, tanh, sigmoid, relu, gelu, silu, softplus, sin, cos, erf, floor, sign, not, isFinite = "is_finite"
    // binary
    case add, sub, mul, div, pow, max, min, mod, and, or
    case eq, ne, lt, le, gt, ge
    // random numbers (docs/RUNTIME.md): (key i32, stream index, element index) -> f64 uniform in [0,1) or normal;
    // (key, stream, element, span) -> index in [0, span); (key i32, i32) -> i32 key
    case rngUniform = "rng_uniform", rngNormal = "rng_normal", rngBelow = "rng_below", rngFold = "rng_fold"
}

/// A scalar expression; its type follows from its operands (see `KernelTypes`).
indirect enum ScalarExpr: Equatable {
    case index(Int)                        // i64 constant
    case constant(Double, ScalarType)      // f32/i32/bool/f64 constant
    case size(String)                      // run-time value of a symbolic size (i64)
    case variable(String)                  // a loop index or a `let`/`var` of the kernel
    case load(BufferID, ScalarExpr)              // element at a flat index
    case unary(ScalarOp, ScalarExpr)
    case binary(ScalarOp, ScalarExpr, ScalarExpr)
    case select(ScalarExpr, ScalarExpr, ScalarExpr)          // condition (bool), then, else
    case convert(ScalarExpr, ScalarType)         // numeric conversion (float to int truncates; to bool is != 0)
    case call(ScalarOp, [ScalarExpr])            // the random-number functions
    case table([Double], ScalarType, ScalarExpr) // element of a constant list at an index
}

/// A statement of a kernel body.
indirect enum KernelStmt {
    case loop(String, ScalarExpr, [KernelStmt])                   // for variable in 0..<extent
    case parallel(String, ScalarExpr, [KernelStmt], work: Int)    // the same, iterations independent, split over the thread
                                                                  // pool when extent * work (elements per iteration) is large
    case store(BufferID, ScalarExpr, ScalarExpr)                  // buffer[index] = value
    case bind(String, ScalarExpr)                           // let variable = value
    case declare(String, ScalarExpr)                        // var variable = initial value
    case accumulate(String, ScalarOp, ScalarExpr)           // variable = variable op value; float adds may reassociate
    case assign(String, ScalarExpr)                         // variable = value
    case when(ScalarExpr, [KernelStmt])                           // if condition { ... }
    case fail(ScalarExpr, Int32, String)                    // if condition: set the error message, return the code
    case gemm(Gemm)                                   // cblas_sgemm
}

/// C[m,n] (+)= op(A)[m,k] op(B)[k,n] on row-major sub-matrices at element offsets, rows `ld` elements apart.
struct Gemm {
    var a: BufferID, aOffset: ScalarExpr, transposeA: Bool
    var b: BufferID, bOffset: ScalarExpr, transposeB: Bool
    var c: BufferID, cOffset: ScalarExpr
    var m: ScalarExpr, n: ScalarExpr, k: ScalarExpr
    var accumulate: Bool
    var lda: ScalarExpr, ldb: ScalarExpr, ldc: ScalarExpr

    /// Leading dimensions left out are those of dense matrices.
    init(a: BufferID, aOffset: ScalarExpr, transposeA: Bool, b: BufferID, bOffset: ScalarExpr, transposeB: Bool,
         c: BufferID, cOffset: ScalarExpr, m: ScalarExpr, n: ScalarExpr, k: ScalarExpr, accumulate: Bool,
         lda: ScalarExpr? = nil, ldb: ScalarExpr? = nil, ldc: ScalarExpr? = nil) {
        (self.a, self.aOffset, self.transposeA, self.b, self.bOffset, self.transposeB) = (a, aOffset, transposeA, b, bOffset, transposeB)
        (self.c, self.cOffset, self.m, self.n, self.k, self.accumulate) = (c, cOffset, m, n, k, accumulate)
        let packed = Self.denseLeadingDimensions(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k)
        (self.lda, self.ldb, self.ldc) = (lda ?? packed.a, ldb ?? packed.b, ldc ?? packed.c)
    }

    /// The leading dimensions of dense matrices: their rows' (transposed: columns') lengths.
    static func denseLeadingDimensions(transposeA: Bool, transposeB: Bool, m: ScalarExpr, n: ScalarExpr, k: ScalarExpr) -> (a: ScalarExpr, b: ScalarExpr, c: ScalarExpr) {
        (transposeA ? m : k, transposeB ? k : n, n)
    }

    /// Whether every operand is a dense matrix (the printer leaves the leading dimensions out).
    var dense: Bool {
        let packed = Self.denseLeadingDimensions(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k)
        return (lda, ldb, ldc) == (packed.a, packed.b, packed.c)
    }
}

/// One loop-nest function: reads and writes only its buffers.
struct Kernel {
    var name: String                   // <function>.k<n>.<op>: unique, and names the Graph IR op it computes
    var buffers: [BufferID]            // its parameters, in order; the first is the op's result
    var body: [KernelStmt]
}

/// A step of an entry function.
indirect enum Step {
    case alloc(BufferID)                                        // malloc the buffer (sized from its shape)
    case free(BufferID)
    case kernel(Kernel, sourceOp: Int)                          // call it; `sourceOp` numbers the Graph IR op (numerics checks)
    case copy(to: BufferID, from: BufferID)                     // whole-buffer memmove
    case loop(index: BufferID, low: BufferID, high: BufferID, body: [Step])  // for index in low..<high (i32 scalars)
    case sequence([Step])                                       // steps in order
}

/// A Graph IR function lowered: its buffers, how symbolic sizes bind, and its steps.
struct EntryFunction {
    var name: String
    var kind: FunctionKind
    var hasKey: Bool
    var buffers: [BufferInfo]
    var inputs: [BufferID]
    var inputNames: [String]
    var outputs: [BufferID]
    var outputNames: [String]
    /// The results' types (a result may be a reshaped view of its buffer).
    var outputTypes: [TensorType]
    /// Symbolic sizes bound from input shapes: (symbol, input position, axis).
    var bindings: [(symbol: String, input: Int, axis: Int)]
    var symbols: [String]
    var steps: [Step]
    /// The Graph IR text of each op, by `sourceOp`, for numerics reports.
    var opTexts: [String]

    func info(_ b: BufferID) -> BufferInfo { buffers[b.id] }
}

/// The whole program: the module's globals and one entry function per Graph IR function.
struct KernelProgram {
    var module: Module
    var functions: [EntryFunction]
}
