/// The Graph IR op set. Each op has one entry here: its arity, its one-line semantics and
/// its type rule (result types from operand types and attributes). The verifier, the
/// printer/parser and the sema builder all use this table.
public enum OpKind: String, CaseIterable, Sendable {
    // elementwise unary
    case neg, abs, exp, log, sqrt, rsqrt, tanh, sigmoid, relu, gelu, silu, softplus, sin, cos, erf, floor, sign, not
    // elementwise binary, NumPy broadcasting
    case add, sub, mul, div, pow, max, min, mod, eq, ne, lt, le, gt, ge, and, or
    case select, cast, constant, iota, sym
    // reductions
    case sum, mean, reduce_max, reduce_min, logsumexp, argmax, cumsum
    // along one axis, a row at a time, and their gradients
    case normalize, normalize_grad, softmax, softmax_grad
    // shape
    case reshape, transpose, broadcast, slice, concat, pad
    // indexing
    case take, scatter_add, update_slice, one_hot
    // linear algebra and images
    case matmul, conv2d, conv2d_transpose, maxpool2d, avgpool2d, maxpool2d_grad, avgpool2d_grad
    // randomness: counter-based, a function of (key, stream, element index)
    case random_uniform = "random.uniform", random_normal = "random.normal", random_bernoulli = "random.bernoulli"
    case random_categorical = "random.categorical", random_randint = "random.randint", rng_fold = "rng.fold"
    // autodiff and state
    case stop_gradient, global, global_set = "global.set", minimize, apply_gradients
    // structure
    case loop, yield, `return`

    var name: String { rawValue }

    enum Arity { case fixed(Int), atLeast(Int) }

    var arity: Arity {
        switch self {
        case .constant, .iota, .sym, .global: return .fixed(0)
        case .select, .update_slice: return .fixed(3)
        case .concat: return .atLeast(1)
        case .loop: return .atLeast(2)
        case .apply_gradients: return .atLeast(1)
        case .yield, .return: return .atLeast(0)
        case .random_uniform, .random_normal, .random_randint, .global_set, .minimize: return .fixed(1)
        case .random_bernoulli, .random_categorical, .rng_fold: return .fixed(2)
        case _ where OpKind.unary.contains(self): return .fixed(1)
        case _ where OpKind.binary.contains(self): return .fixed(2)
        case .sum, .mean, .reduce_max, .reduce_min, .logsumexp, .argmax, .cumsum, .normalize, .softmax, .reshape, .transpose, .broadcast, .slice, .pad,
             .one_hot, .maxpool2d, .avgpool2d, .cast, .stop_gradient:
            return .fixed(1)
        default: return .fixed(2) // take, scatter_add, matmul, conv2d, conv2d_transpose, pool gradients
        }
    }

    static let unary: Set<OpKind> = [.neg, .abs, .exp, .log, .sqrt, .rsqrt, .tanh, .sigmoid, .relu, .gelu, .silu, .softplus, .sin, .cos, .erf, .floor, .sign, .not]
    static let binary: Set<OpKind> = [.add, .sub, .mul, .div, .pow, .max, .min, .mod, .eq, .ne, .lt, .le, .gt, .ge, .and, .or]
    static let comparisons: Set<OpKind> = [.eq, .ne, .lt, .le, .gt, .ge]
    static let reductions: Set<OpKind> = [.sum, .mean, .reduce_max, .reduce_min, .logsumexp]
    static let random: Set<OpKind> = [.random_uniform, .random_normal, .random_bernoulli, .random_categorical, .random_randint]
    /// Ops with effects or structure; simplification must keep them.
    var hasEffects: Bool { [.global_set, .minimize, .apply_gradients, .yield, .return, .loop].contains(self) }

    /// One-line semantics, used by docs/IR.md and `mdlc ops`.
    var summary: String {
        switch self {
        case .neg: return "-x"
        case .abs: return "|x|"
        case .exp: return "e^x"
        case .log: return "natural logarithm"
        case .sqrt: return "square root"
        case .rsqrt: return "1/sqrt(x)"
        case .tanh: return "hyperbolic tangent"
        case .sigmoid: return "1/(1+e^-x)"
        case .relu: return "max(x, 0)"
        case .gelu: return "x*Phi(x), the exact (erf) GELU"
        case .silu: return "x*sigmoid(x)"
        case .softplus: return "log(1+e^x), computed stably"
        case .sin: return "sine"
        case .cos: return "cosine"
        case .erf: return "error function"
        case .floor: return "largest integer not above x"
        case .sign: return "-1, 0 or 1"
        case .not: return "logical not of a bool tensor"
        case .add: return "a+b, broadcasting"
        case .sub: return "a-b, broadcasting"
        case .mul: return "a*b, broadcasting"
        case .div: return "a/b, broadcasting (integer division truncates toward zero)"
        case .pow: return "a^b, broadcasting"
        case .max: return "elementwise maximum, broadcasting"
        case .min: return "elementwise minimum, broadcasting"
        case .mod: return "a mod b with the sign of b (Python's %), broadcasting"
        case .eq, .ne, .lt, .le, .gt, .ge: return "comparison, broadcasting; result bool"
        case .and, .or: return "logical and/or of bool tensors, broadcasting"
        case .select: return "select(c, a, b): a where c is true, else b; all three broadcast"
        case .cast: return "convert to {dtype}; float to int truncates, bool is 0/1"
        case .constant: return "a tensor of {dtype} and {shape} filled with {value}, or the list {value}"
        case .iota: return "index along {axis} of a tensor of {shape}"
        case .sym: return "the run-time value of the symbolic size {dim}, as i32[]"
        case .sum: return "sum over {axes} (keepdims)"
        case .mean: return "mean over {axes} (keepdims)"
        case .reduce_max: return "maximum over {axes} (keepdims); unspecified where a NaN is among them"
        case .reduce_min: return "minimum over {axes} (keepdims); unspecified where a NaN is among them"
        case .logsumexp: return "log(sum(exp(x))) over {axes}, stably (keepdims)"
        case .argmax: return "index of the first maximum along {axis} (keepdims); i32"
        case .cumsum: return "inclusive running sum along {axis}"
        case .normalize: return "(x - mean) / sqrt(variance + {eps}) along {axis} (the biased variance): a layer norm without its affine part"
        case .softmax: return "exp(x - max) / sum(exp(x - max)) along {axis}"
        case .softmax_grad: return "softmax_grad(y, g): the gradient of softmax for its result y and g, y * (g - sum(g * y)) along {axis}"
        case .normalize_grad: return "normalize_grad(x, g): the gradient of normalize(x) for g, (g - mean(g) - y * mean(g * y)) / sqrt(variance + {eps}) with y = normalize(x)"
        case .reshape: return "same elements in row-major order, new {shape}"
        case .transpose: return "permute axes: result axis i is operand axis {perm}[i]"
        case .broadcast: return "NumPy-broadcast to {shape}"
        case .slice: return "elements {starts} <= i < {ends} with {strides} along every axis"
        case .concat: return "join operands along {axis}"
        case .pad: return "pad with {value}: {low} before, {high} after and {interior} between elements (default 0) along every axis"
        case .take: return "take(x, idx): gather slices of x along {axis} at idx; result x.shape[:axis] + idx.shape + x.shape[axis+1:]"
        case .scatter_add: return "scatter_add(src, idx): zeros of {size} along {axis}, src slice j added at idx[j] (idx 1-D)"
        case .update_slice: return "update_slice(buf, val, i): buf with the slice at index i along {axis} replaced by val"
        case .one_hot: return "one_hot(idx): f32 with a trailing axis of {depth}, 1 at idx"
        case .matmul: return "batched matrix product [...,m,k] x [...,k,n], batch dims broadcast"
        case .conv2d: return "2-D cross-correlation, x NCHW, w OIHW, {stride} {padding} {dilation}"
        case .conv2d_transpose: return "transposed 2-D convolution (gradient of conv2d wrt its input), w IOHW"
        case .maxpool2d: return "max over {kernel} windows with {stride} {padding}, NCHW"
        case .avgpool2d: return "mean over {kernel} windows with {stride} {padding} (padding counted), NCHW"
        case .maxpool2d_grad: return "maxpool2d_grad(x, g): g of each window added at the window's first maximum of x; shaped like x"
        case .avgpool2d_grad: return "avgpool2d_grad(x, g): g of each window spread evenly over the window; shaped like x"
        case .random_uniform: return "uniform in [{low},{high}) of {shape}, from (key, {stream}, index)"
        case .random_normal: return "standard normal of {shape}, from (key, {stream}, index)"
        case .random_bernoulli: return "1.0 with probability p else 0.0, shaped like p"
        case .random_categorical: return "sample an index from the softmax of logits over the last axis"
        case .random_randint: return "integers uniform in [{low},{high}) of {shape}"
        case .rng_fold: return "a new key from a key and an i32 (a loop index)"
        case .stop_gradient: return "identity whose gradient is zero"
        case .global: return "the current value of the global tensor {name}"
        case .global_set: return "set the global state tensor {name} (takes effect when the function returns)"
        case .minimize: return "marks a loss for the update of {optimizer}; autodiff replaces it"
        case .apply_gradients: return "apply_gradients(loss, g...): update the {params} with their gradients by {optimizer}; optimizer lowering replaces it"
        case .loop: return "loop(lo, hi, init...): for i in lo..<hi run the body on (i, carried...); results are the final carried values"
        case .yield: return "end of a loop body: the next carried values"
        case .return: return "end of a function: its results"
        }
    }

    /// Attributes that must be present.
    var requiredAttrs: [String] {
        switch self {
        case .cast: return ["dtype"]
        case .constant: return ["value", "dtype", "shape"]
        case .iota: return ["shape", "axis"]
        case .sym: return ["dim"]
        case .sum, .mean, .reduce_max, .reduce_min, .logsumexp: return ["axes"]
        case .argmax, .cumsum: return ["axis"]
        case .normalize, .normalize_grad: return ["axis", "eps"]
        case .softmax, .softmax_grad: return ["axis"]
        case .reshape, .broadcast: return ["shape"]
        case .transpose: return ["perm"]
        case .slice: return ["starts", "ends", "strides"]
        case .concat, .take, .update_slice: return ["axis"]
        case .pad: return ["low", "high", "value"]
        case .scatter_add: return ["axis", "size"]
        case .one_hot: return ["depth"]
        case .conv2d: return ["stride", "padding", "dilation"]
        case .conv2d_transpose: return ["stride", "padding", "output_padding"]
        case .maxpool2d, .avgpool2d, .maxpool2d_grad, .avgpool2d_grad: return ["kernel", "stride", "padding"]
        case .random_uniform, .random_randint: return ["shape", "stream", "low", "high"]
        case .random_normal: return ["shape", "stream"]
        case .random_bernoulli, .random_categorical: return ["stream"]
        case .global, .global_set: return ["name"]
        case .minimize: return ["optimizer"]
        case .apply_gradients: return ["optimizer", "params"]
        default: return []
        }
    }
}

/// A type error from an op's rule; the message is user-facing.
struct TypeError: Error { let message: String }

private func fail(_ m: String) -> TypeError { TypeError(message: m) }

private let verbs: [OpKind: String] = [.add: "add", .sub: "subtract", .mul: "multiply", .div: "divide", .pow: "raise", .max: "take the maximum of", .min: "take the minimum of", .mod: "take the remainder of"]

extension OpKind {
    /// Result types of this op, or a message saying why the operands do not fit.
    func inferTypes(_ operands: [TensorType], _ attrs: [String: Attr]) throws -> [TensorType] {
        let types = try ruleTypes(operands, attrs)
        for t in types {
            var count = 1
            for d in t.shape {
                guard let c = d.constant else { continue }
                if c < 0 { throw fail("'\(name)' would produce the negative size \(c) in \(t)") }
                let (p, overflow) = count.multipliedReportingOverflow(by: c)
                // 2^40 elements is far beyond any machine this runs on; larger counts also wrap.
                if overflow || p > 1 << 40 { throw fail("'\(name)' would produce \(t), which has too many elements") }
                count = p
            }
        }
        return types
    }

    private func ruleTypes(_ operands: [TensorType], _ attrs: [String: Attr]) throws -> [TensorType] {
        switch arity {
        case .fixed(let n) where operands.count != n:
            throw fail("'\(name)' takes \(n) operand\(n == 1 ? "" : "s"), got \(operands.count)")
        case .atLeast(let n) where operands.count < n:
            throw fail("'\(name)' takes at least \(n) operands, got \(operands.count)")
        default: break
        }
        for a in requiredAttrs where attrs[a] == nil { throw fail("'\(name)' needs the attribute '\(a)'") }
        func ints(_ k: String) throws -> [Int] {
            guard let v = attrs[k]?.ints else { throw fail("'\(name)': attribute '\(k)' must be a list of integers") }
            return v
        }
        func int(_ k: String) throws -> Int {
            guard let v = attrs[k]?.intValue else { throw fail("'\(name)': attribute '\(k)' must be an integer") }
            return v
        }
        func dims(_ k: String) throws -> [Dim] {
            guard let v = attrs[k]?.dims else { throw fail("'\(name)': attribute '\(k)' must be a list of sizes") }
            return v
        }
        func dtype(_ k: String) throws -> DType {
            guard case .dtype(let d)? = attrs[k] else { throw fail("'\(name)': attribute '\(k)' must be a dtype") }
            return d
        }
        func axis(_ a: Int, rank: Int) throws -> Int {
            let r = a < 0 ? a + rank : a
            guard r >= 0 && r < rank else { throw fail("axis \(a) is out of range for a tensor of rank \(rank)") }
            return r
        }
        let t = operands
        switch self {
        case .not:
            guard t[0].dtype == .bool else { throw fail("'not' needs a bool tensor, got \(t[0])") }
            return [t[0]]
        case .neg, .abs, .sign:
            guard t[0].dtype != .bool else { throw fail("'\(name)' needs a numeric tensor, got \(t[0])") }
            return [t[0]]
        case _ where OpKind.unary.contains(self):
            guard t[0].dtype == .f32 else { throw fail("'\(name)' needs an f32 tensor, got \(t[0]); cast it with f32(...)") }
            return [t[0]]
        case _ where OpKind.binary.contains(self):
            guard t[0].dtype == t[1].dtype else {
                throw fail("cannot \(verbs[self] ?? "compare") \(t[0]) and \(t[1]): element types differ")
            }
            guard let s = broadcastShapes(t[0].shape, t[1].shape) else {
                if OpKind.comparisons.contains(self) { throw fail("cannot compare \(t[0]) and \(t[1]): shapes do not broadcast") }
                throw fail("cannot \(verbs[self] ?? name) \(t[0]) and \(t[1])")
            }
            if self == .and || self == .or {
                guard t[0].dtype == .bool else { throw fail("'\(name)' needs bool tensors, got \(t[0])") }
                return [TensorType(.bool, s)]
            }
            if OpKind.comparisons.contains(self) { return [TensorType(.bool, s)] }
            guard t[0].dtype != .bool else { throw fail("cannot \(verbs[self] ?? name) bool tensors") }
            return [TensorType(t[0].dtype, s)]
        case .select:
            guard t[0].dtype == .bool else { throw fail("the condition of 'where' must be bool, got \(t[0])") }
            guard t[1].dtype == t[2].dtype else { throw fail("the branches of 'where' differ in element type: \(t[1]) and \(t[2])") }
            guard let s1 = broadcastShapes(t[1].shape, t[2].shape), let s = broadcastShapes(t[0].shape, s1) else {
                throw fail("the operands of 'where' do not broadcast: \(t[0]), \(t[1]) and \(t[2])")
            }
            return [TensorType(t[1].dtype, s)]
        case .cast:
            return [t[0].with(dtype: try dtype("dtype"))]
        case .constant:
            let shape = try dims("shape")
            if try dtype("dtype") == .i32 {
                let values: [Attr]
                if case .list(let vs) = attrs["value"]! { values = vs } else { values = [attrs["value"]!] }
                for v in values {
                    guard let i = v.intValue, fitsInt32(i) else { throw fail("the i32 constant \(IRPrinter().attr(v)) is not an integer in the i32 range") }
                }
            }
            if case .list(let vs) = attrs["value"]! {
                guard let n = TensorType(.f32, shape).staticCount, n == vs.count else {
                    throw fail("constant has \(vs.count) values but shape \(TensorType(.f32, shape))")
                }
            }
            return [TensorType(try dtype("dtype"), shape)]
        case .iota:
            let shape = try dims("shape")
            guard try int("axis") >= 0 else { throw fail("iota's axis must be non-negative") }
            _ = try axis(try int("axis"), rank: shape.count)
            return [TensorType(.i32, shape)]
        case .sym:
            guard attrs["dim"]?.dimValue != nil else { throw fail("'sym' needs a size in 'dim'") }
            return [TensorType(.i32, [])]
        case .sum, .mean, .reduce_max, .reduce_min, .logsumexp, .argmax:
            let axes = self == .argmax ? [try int("axis")] : try ints("axes")
            let keep = attrs["keepdims"].map { $0 == .bool(true) } ?? false
            var normalized = Set<Int>()
            for a in axes { normalized.insert(try axis(a, rank: t[0].rank)) }
            if (self == .mean || self == .logsumexp) && t[0].dtype != .f32 { throw fail("'\(name)' needs an f32 tensor, got \(t[0])") }
            if t[0].dtype == .bool { throw fail("'\(name)' needs a numeric tensor, got \(t[0])") }
            var shape: [Dim] = []
            for (i, d) in t[0].shape.enumerated() {
                if normalized.contains(i) { if keep { shape.append(1) } } else { shape.append(d) }
            }
            return [TensorType(self == .argmax ? .i32 : t[0].dtype, shape)]
        case .cumsum:
            guard t[0].dtype != .bool else { throw fail("cumsum needs a numeric tensor, got \(t[0])") }
            _ = try axis(try int("axis"), rank: t[0].rank)
            return [t[0]]
        case .normalize, .normalize_grad, .softmax, .softmax_grad:
            guard t.allSatisfy({ $0.dtype == .f32 }) else { throw fail("'\(name)' needs f32 tensors, got \(t.map(\.description).joined(separator: " and "))") }
            guard t.allSatisfy({ $0.shape == t[0].shape }) else { throw fail("'\(name)': the gradient \(t[1]) does not match \(t[0])") }
            _ = try axis(try int("axis"), rank: t[0].rank)
            guard [.softmax, .softmax_grad].contains(self) || attrs["eps"]?.doubleValue != nil else { throw fail("'\(name)': attribute 'eps' must be a number") }
            return [t[0]]
        case .reshape:
            let shape = try dims("shape")
            let a = t[0].shape.reduce(Dim(1), *), b = shape.reduce(Dim(1), *)
            guard a == b else { throw fail("cannot reshape \(t[0]) to [\(shape.map(\.description).joined(separator: ","))]: element counts differ") }
            return [t[0].with(shape: shape)]
        case .transpose:
            let perm = try ints("perm")
            guard perm.sorted() == Array(0..<t[0].rank) else { throw fail("permutation \(perm) does not fit a tensor of rank \(t[0].rank)") }
            return [t[0].with(shape: perm.map { t[0].shape[$0] })]
        case .broadcast:
            let shape = try dims("shape")
            guard shape.count >= t[0].rank, broadcastShapes(t[0].shape, shape) == shape else {
                throw fail("cannot broadcast \(t[0]) to [\(shape.map(\.description).joined(separator: ","))]")
            }
            return [t[0].with(shape: shape)]
        case .slice:
            let starts = try dims("starts"), ends = try dims("ends"), strides = try ints("strides")
            guard starts.count == t[0].rank, ends.count == t[0].rank, strides.count == t[0].rank else {
                throw fail("slice of a rank-\(t[0].rank) tensor needs \(t[0].rank) starts, ends and strides")
            }
            var shape: [Dim] = []
            for i in 0..<t[0].rank {
                guard strides[i] >= 1 else { throw fail("slice stride must be positive, got \(strides[i])") }
                let len = ends[i] - starts[i]
                if let c = len.constant {
                    guard c >= 0 else { throw fail("slice \(starts[i])..\(ends[i]) is empty or reversed on axis \(i)") }
                    guard c < 1 << 40 else { throw fail("slice \(starts[i])..\(ends[i]) of axis \(i) is too long") }
                    shape.append(Dim((c + strides[i] - 1) / strides[i]))
                } else if strides[i] == 1 {
                    shape.append(len)
                } else {
                    guard let q = len.divided(by: Dim(strides[i])) else { throw fail("a strided slice of a symbolic size must divide exactly") }
                    shape.append(q)
                }
                if let e = ends[i].constant, let d = t[0].shape[i].constant, e > d { throw fail("slice end \(e) is past the size \(d) of axis \(i)") }
            }
            return [t[0].with(shape: shape)]
        case .concat:
            let ax = try axis(try int("axis"), rank: t[0].rank)
            var total = Dim(0)
            for x in t {
                guard x.dtype == t[0].dtype, x.rank == t[0].rank else { throw fail("cannot concatenate \(t[0]) and \(x)") }
                for i in 0..<x.rank where i != ax && x.shape[i] != t[0].shape[i] {
                    throw fail("cannot concatenate \(t[0]) and \(x) along axis \(ax): axis \(i) differs")
                }
                total = total + x.shape[ax]
            }
            var shape = t[0].shape
            shape[ax] = total
            return [t[0].with(shape: shape)]
        case .pad:
            let lo = try dims("low"), hi = try dims("high")
            let interior = attrs["interior"] == nil ? Array(repeating: 0, count: t[0].rank) : try ints("interior")
            guard lo.count == t[0].rank, hi.count == t[0].rank, interior.count == t[0].rank else { throw fail("pad of a rank-\(t[0].rank) tensor needs \(t[0].rank) low, high and interior sizes") }
            for d in lo + hi { if let c = d.constant, c < 0 || c >= 1 << 31 { throw fail("pad sizes must be non-negative") } }
            guard interior.allSatisfy({ $0 >= 0 && $0 < 1 << 31 }) else { throw fail("interior padding must be non-negative") }
            return [t[0].with(shape: (0..<t[0].rank).map { i in
                let n = t[0].shape[i]
                let inner = n.constant == 0 ? Dim(0) : (n - Dim(1)) * Dim(interior[i])
                return n + inner + lo[i] + hi[i]
            })]
        case .take:
            guard t[1].dtype == .i32 else { throw fail("indices must be i32, got \(t[1])") }
            let ax = try axis(try int("axis"), rank: t[0].rank)
            return [t[0].with(shape: Array(t[0].shape[..<ax]) + t[1].shape + Array(t[0].shape[(ax + 1)...]))]
        case .scatter_add:
            guard t[1].dtype == .i32, t[1].rank == 1 else { throw fail("scatter indices must be i32[E], got \(t[1])") }
            let ax = try axis(try int("axis"), rank: t[0].rank)
            guard t[0].shape[ax] == t[1].shape[0] else { throw fail("scatter_add: \(t[0]) has \(t[0].shape[ax]) slices along axis \(ax) but there are \(t[1].shape[0]) indices") }
            guard let size = attrs["size"]?.dimValue else { throw fail("scatter_add needs a size") }
            var shape = t[0].shape
            shape[ax] = size
            return [t[0].with(shape: shape)]
        case .update_slice:
            let ax = try axis(try int("axis"), rank: t[0].rank)
            var expected = t[0].shape
            expected.remove(at: ax)
            guard t[1].dtype == t[0].dtype, t[1].shape == expected else { throw fail("cannot store \(t[1]) into a slice of \(t[0]) along axis \(ax)") }
            guard t[2].dtype == .i32, t[2].rank == 0 else { throw fail("the slice index must be i32[], got \(t[2])") }
            return [t[0]]
        case .one_hot:
            guard t[0].dtype == .i32 else { throw fail("one_hot needs i32 indices, got \(t[0])") }
            let depth = try int("depth")
            guard depth >= 1 && depth < 1 << 31 else { throw fail("one_hot depth must be positive, got \(depth)") }
            return [TensorType(.f32, t[0].shape + [Dim(depth)])]
        case .matmul:
            let a = t[0], b = t[1]
            guard a.dtype == .f32, b.dtype == .f32 else { throw fail("matmul needs f32 operands, got \(a) and \(b)") }
            guard a.rank >= 2, b.rank >= 2 else { throw fail("matmul needs operands of rank 2 or more, got \(a) and \(b)") }
            guard a.shape[a.rank - 1] == b.shape[b.rank - 2] else {
                throw fail("cannot multiply \(a) and \(b): inner dimensions \(a.shape[a.rank - 1]) and \(b.shape[b.rank - 2]) differ")
            }
            guard let batch = broadcastShapes(Array(a.shape.dropLast(2)), Array(b.shape.dropLast(2))) else {
                throw fail("cannot multiply \(a) and \(b): batch dimensions do not broadcast")
            }
            return [TensorType(.f32, batch + [a.shape[a.rank - 2], b.shape[b.rank - 1]])]
        case .conv2d, .conv2d_transpose:
            let x = t[0], w = t[1]
            guard x.rank == 4, w.rank == 4, x.dtype == .f32, w.dtype == .f32 else { throw fail("\(name) needs f32 NCHW input and 4-D weights, got \(x) and \(w)") }
            let stride = try ints("stride"), pad = try ints("padding")
            guard stride.count == 2, pad.count == 2, stride.allSatisfy({ $0 >= 1 }), pad.allSatisfy({ $0 >= 0 }) else { throw fail("\(name): stride and padding need two entries each (stride >= 1, padding >= 0)") }
            guard let kh = w.shape[2].constant, let kw = w.shape[3].constant else { throw fail("\(name): kernel size must be static") }
            if self == .conv2d {
                let dil = try ints("dilation")
                guard dil.count == 2, dil.allSatisfy({ $0 >= 1 }) else { throw fail("conv2d: dilation needs two entries >= 1") }
                guard x.shape[1] == w.shape[1] else { throw fail("conv2d: input has \(x.shape[1]) channels but the weights expect \(w.shape[1])") }
                var out: [Dim] = [x.shape[0], w.shape[0]]
                for (i, k) in [kh, kw].enumerated() {
                    guard let s = x.shape[2 + i].constant else { throw fail("conv2d: spatial sizes must be static, got \(x)") }
                    let o = (s &+ 2 &* pad[i] &- dil[i] &* (k &- 1) &- 1) / stride[i] &+ 1
                    guard o >= 1 else { throw fail("conv2d: kernel \(k) does not fit an input of size \(s) with padding \(pad[i])") }
                    out.append(Dim(o))
                }
                return [TensorType(.f32, out)]
            } else {
                let op = try ints("output_padding")
                guard op.count == 2 else { throw fail("conv2d_transpose: output_padding needs two entries") }
                guard x.shape[1] == w.shape[0] else { throw fail("conv2d_transpose: input has \(x.shape[1]) channels but the weights expect \(w.shape[0])") }
                var out: [Dim] = [x.shape[0], w.shape[1]]
                for (i, k) in [kh, kw].enumerated() {
                    guard let s = x.shape[2 + i].constant else { throw fail("conv2d_transpose: spatial sizes must be static, got \(x)") }
                    let o = (s &- 1) &* stride[i] &- 2 &* pad[i] &+ k &+ op[i]
                    guard o >= 1 else { throw fail("conv2d_transpose: output size \(o) is not positive") }
                    out.append(Dim(o))
                }
                return [TensorType(.f32, out)]
            }
        case .maxpool2d, .avgpool2d:
            let x = t[0]
            guard x.rank == 4, x.dtype == .f32 else { throw fail("\(name) needs an f32 NCHW tensor, got \(x)") }
            let k = try ints("kernel"), s = try ints("stride"), p = try ints("padding")
            guard k.count == 2, s.count == 2, p.count == 2 else { throw fail("\(name): kernel, stride and padding need two entries each") }
            var out = Array(x.shape[0..<2])
            for i in 0..<2 {
                guard let n = x.shape[2 + i].constant else { throw fail("\(name): spatial sizes must be static, got \(x)") }
                guard s[i] >= 1, k[i] >= 1, p[i] >= 0 else { throw fail("\(name): kernel and stride must be positive and padding not negative") }
                let o = (n &+ 2 &* p[i] &- k[i]) / s[i] &+ 1
                guard o >= 1 else { throw fail("\(name): window \(k[i]) does not fit an input of size \(n)") }
                out.append(Dim(o))
            }
            return [x.with(shape: out)]
        case .maxpool2d_grad, .avgpool2d_grad:
            guard t[0].rank == 4, t[0].dtype == .f32, t[1].dtype == .f32 else { throw fail("\(name) needs f32 NCHW tensors, got \(t[0]) and \(t[1])") }
            let pooled = try (self == .maxpool2d_grad ? OpKind.maxpool2d : OpKind.avgpool2d).ruleTypes([t[0]], attrs)
            guard pooled[0] == t[1] else { throw fail("\(name): the gradient \(t[1]) does not match the pooled shape \(pooled[0])") }
            return [t[0]]
        case .random_uniform, .random_normal, .random_randint:
            guard t[0] == TensorType(.i32, []) else { throw fail("a random op needs an i32[] key, got \(t[0])") }
            return [TensorType(self == .random_randint ? .i32 : .f32, try dims("shape"))]
        case .random_bernoulli:
            guard t[0] == TensorType(.i32, []) else { throw fail("a random op needs an i32[] key, got \(t[0])") }
            guard t[1].dtype == .f32 else { throw fail("bernoulli needs f32 probabilities, got \(t[1])") }
            return [t[1]]
        case .random_categorical:
            guard t[0] == TensorType(.i32, []) else { throw fail("a random op needs an i32[] key, got \(t[0])") }
            guard t[1].dtype == .f32, t[1].rank >= 1 else { throw fail("categorical needs f32 logits, got \(t[1])") }
            return [TensorType(.i32, Array(t[1].shape.dropLast()))]
        case .rng_fold:
            guard t[0] == TensorType(.i32, []), t[1] == TensorType(.i32, []) else { throw fail("rng.fold needs two i32[] operands") }
            return [t[0]]
        case .stop_gradient:
            return [t[0]]
        case .global:
            guard case .symbol? = attrs["name"] else { throw fail("'global' needs a symbol 'name'") }
            return [] // the type comes from the module's declaration; see Verifier
        case .global_set, .minimize, .yield, .return:
            return []
        case .apply_gradients:
            guard let params = attrs["params"]?.symbols, params.count == t.count - 1 else { throw fail("apply_gradients needs one gradient per name in 'params'") }
            guard t[0] == TensorType(.f32, []) else { throw fail("apply_gradients needs the f32[] loss first, got \(t[0])") }
            return []
        case .loop:
            guard t[0] == TensorType(.i32, []), t[1] == TensorType(.i32, []) else { throw fail("loop bounds must be i32[], got \(t[0]) and \(t[1])") }
            return Array(t.dropFirst(2))
        default:
            throw fail("no type rule for '\(name)'")
        }
    }
}
