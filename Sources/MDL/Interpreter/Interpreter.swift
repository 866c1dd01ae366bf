import Foundation

public struct InterpreterError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// The reference interpreter of the Graph IR: naive loops in float64, the oracle that
/// passes and generated kernels are checked against. Not an execution engine for users.
public final class Interpreter {
    let module: Module
    /// Current values of parameters and state.
    public var globals: [String: Tensor] = [:]
    /// The gradients of the last `apply_gradients` executed (before optimizer lowering).
    public var lastGradients: [String: Tensor] = [:]
    /// For finite differences of losses with `stop_gradient`: `.record` keeps each stopped
    /// value, `.replay` returns the kept values, so stopped quantities stay constant.
    public enum StopGradientMode { case normal, record, replay }
    public var stopGradientMode = StopGradientMode.normal
    private var stoppedValues: [Int: Tensor] = [:]

    /// Initializes every global from its initializer with `seed`.
    public init(module: Module, seed: Int32 = 0) {
        self.module = module
        for g in module.globals {
            let shape = g.type.shape.map { $0.constant ?? 0 }
            let n = shape.reduce(1, *)
            let stream = CounterRNG.stream(of: g.name)
            var data = [Double](repeating: 0, count: n)
            switch g.initializer {
            case "ones": data = Array(repeating: 1, count: n)
            case "full": data = Array(repeating: g.initAttrs["value"]?.doubleValue ?? 0, count: n)
            case "normal":
                let std = g.initAttrs["std"]?.doubleValue ?? 1, mean = g.initAttrs["mean"]?.doubleValue ?? 0
                for i in 0..<n { data[i] = mean + std * CounterRNG.normal(key: seed, stream: stream, index: i) }
            case "uniform":
                let lo = g.initAttrs["low"]?.doubleValue ?? 0, hi = g.initAttrs["high"]?.doubleValue ?? 1
                for i in 0..<n { data[i] = lo + (hi - lo) * CounterRNG.uniform(key: seed, stream: stream, index: i) }
            default: break
            }
            globals[g.name] = Tensor(g.type.dtype, shape, data)
        }
    }

    /// Runs a function on inputs (without its key argument; `key` is passed when the function has one).
    /// Binds symbolic sizes from the input shapes; state writes take effect when it returns.
    public func run(_ name: String, _ inputs: [Tensor], key: Int32 = 0) throws -> [Tensor] {
        guard let f = module.function(name) else { throw InterpreterError(message: "no function @\(name)") }
        var args = inputs
        let wantsKey = f.arguments.count == inputs.count + 1 && f.names[f.arguments.last!.id] == "key"
        if wantsKey { args.append(.scalar(Double(key), .i32)) }
        guard args.count == f.arguments.count else {
            throw InterpreterError(message: "@\(name) takes \(f.arguments.count) inputs, got \(inputs.count)")
        }
        var env: [String: Int] = [:]
        for (a, t) in zip(f.arguments, args) {
            let type = f.type(of: a)
            guard type.rank == t.shape.count, type.dtype == t.dtype else {
                throw InterpreterError(message: "input %\(f.names[a.id] ?? "?") of @\(name) must be \(type), got \(t.dtype.rawValue)\(t.shape)")
            }
            for (d, n) in zip(type.shape, t.shape) {
                if let c = d.evaluate(env) {
                    guard c == n else { throw InterpreterError(message: "input %\(f.names[a.id] ?? "?") has size \(n) where \(d) = \(c)") }
                } else if let symbol = d.singleSymbol {
                    env[symbol] = n
                } else {
                    throw InterpreterError(message: "cannot bind the size \(d) from input %\(f.names[a.id] ?? "?")")
                }
            }
        }
        var frame = Frame(function: f, env: env)
        for (a, t) in zip(f.arguments, args) { frame.values[a.id] = t }
        let results = try execute(f.body, &frame)
        for (i, (r, type)) in zip(results, f.resultTypes).enumerated() {
            let expected = type.shape.map { $0.evaluate(env) }
            guard r.dtype == type.dtype, expected.count == r.shape.count, zip(expected, r.shape).allSatisfy({ $0 == $1 }) else {
                throw InterpreterError(message: "result \(i) of @\(name) is \(r.dtype.rawValue)\(r.shape), declared \(type)")
            }
        }
        for (name, value) in frame.pendingState { globals[name] = value }
        return results
    }

    struct Frame {
        let function: Function
        var env: [String: Int]
        var values: [Int: Tensor] = [:]
        var pendingState: [(String, Tensor)] = []
    }

    private func execute(_ block: Block, _ frame: inout Frame) throws -> [Tensor] {
        for op in block.operations {
            let operands = op.operands.map { frame.values[$0.id]! }
            switch op.op {
            case .return, .yield:
                return operands
            case .loop:
                guard let lo = exactInt(operands[0].scalar), let hi = exactInt(operands[1].scalar) else { throw InterpreterError(message: "loop bounds are not integers") }
                var carried = Array(operands.dropFirst(2))
                let body = op.regions[0]
                if lo < hi {
                    for i in lo..<hi {
                        frame.values[body.arguments[0].id] = .scalar(Double(i), .i32)
                        for (a, v) in zip(body.arguments.dropFirst(), carried) { frame.values[a.id] = v }
                        carried = try execute(body, &frame)
                    }
                }
                for (r, v) in zip(op.results, carried) { frame.values[r.id] = v }
            case .global_set:
                guard case .symbol(let n)? = op.attrs["name"] else { continue }
                frame.pendingState.append((n, operands[0]))
            case .minimize:
                continue
            case .apply_gradients:
                // The interpreter records gradients for the tests; optimizer lowering turns this op into updates.
                lastGradients = Dictionary(uniqueKeysWithValues: zip(op.attrs["params"]?.symbols ?? [], operands.dropFirst()))
            default:
                let resultTypes = op.results.map { frame.function.type(of: $0) }
                let shapes = try resultTypes.map { t in
                    try t.shape.map { d -> Int in
                        guard let v = d.evaluate(frame.env) else { throw InterpreterError(message: "unbound size \(d)") }
                        return v
                    }
                }
                let out = try evaluate(op, operands, resultType: resultTypes.first, shape: shapes.first ?? [], env: frame.env)
                frame.values[op.results[0].id] = out
            }
        }
        return []
    }

    private func dims(_ a: Attr?, _ env: [String: Int]) throws -> [Int] {
        guard let ds = a?.dims else { throw InterpreterError(message: "missing size list") }
        return try ds.map { d in
            guard let v = d.evaluate(env) else { throw InterpreterError(message: "unbound size \(d)") }
            return v
        }
    }

    /// The semantics of each op (see OpKind.summary); one case per op.
    func evaluate(_ op: Operation, _ x: [Tensor], resultType: TensorType?, shape: [Int], env: [String: Int]) throws -> Tensor {
        let dtype = resultType?.dtype ?? .f32
        let a = op.attrs
        switch op.op {
        case _ where OpKind.unary.contains(op.op):
            let f = Interpreter.unaryRule(op.op)
            return Tensor(dtype, shape, x[0].data.map(f))
        case _ where OpKind.binary.contains(op.op):
            let f = Interpreter.binaryRule(op.op, integer: x[0].dtype != .f32)
            var out = [Double](repeating: 0, count: shape.reduce(1, *))
            var k = 0
            forEachIndex(shape, [broadcastStrides(x[0].shape, to: shape), broadcastStrides(x[1].shape, to: shape)]) { o in
                out[k] = f(x[0].data[o[0]], x[1].data[o[1]])
                k += 1
            }
            return Tensor(dtype, shape, out)
        case .select:
            var out = [Double](repeating: 0, count: shape.reduce(1, *))
            var k = 0
            forEachIndex(shape, x.map { broadcastStrides($0.shape, to: shape) }) { o in
                out[k] = x[0].data[o[0]] != 0 ? x[1].data[o[1]] : x[2].data[o[2]]
                k += 1
            }
            return Tensor(dtype, shape, out)
        case .cast:
            let f: (Double) -> Double
            switch dtype {
            case .f32: f = { $0 }
            case .i32: f = { $0.rounded(.towardZero) }
            case .bool: f = { $0 != 0 ? 1 : 0 }
            }
            return Tensor(dtype, shape, x[0].data.map(f))
        case .constant:
            if case .list(let vs)? = a["value"] { return Tensor(dtype, shape, vs.map { $0.doubleValue ?? 0 }) }
            return Tensor(dtype, shape, repeating: a["value"]?.doubleValue ?? 0)
        case .iota:
            let axis = Interpreter.normalize(a["axis"]!.intValue!, shape.count)
            let st = strides(shape)
            return Tensor(.i32, shape, (0..<shape.reduce(1, *)).map { Double(($0 / st[axis]) % shape[axis]) })
        case .sym:
            guard let d = a["dim"]?.dimValue, let v = d.evaluate(env) else { throw InterpreterError(message: "unbound size in 'sym'") }
            return .scalar(Double(v), .i32)
        case .sum, .mean, .reduce_max, .reduce_min, .logsumexp, .argmax:
            return reduce(op.op, x[0], axes: op.op == .argmax ? [a["axis"]!.intValue!] : a["axes"]!.ints!, dtype: dtype, shape: shape)
        case .cumsum:
            let axis = Interpreter.normalize(a["axis"]!.intValue!, shape.count)
            let inner = shape[(axis + 1)...].reduce(1, *), n = shape[axis], outer = shape[..<axis].reduce(1, *)
            var out = x[0].data
            for o in 0..<outer { for q in 0..<inner { for i in 1..<max(n, 1) {
                out[(o * n + i) * inner + q] += out[(o * n + i - 1) * inner + q]
            } } }
            return Tensor(dtype, shape, out)
        case .normalize, .normalize_grad, .softmax, .softmax_grad:
            let axis = Interpreter.normalize(a["axis"]!.intValue!, shape.count), eps = a["eps"]?.doubleValue ?? 0
            let inner = shape[(axis + 1)...].reduce(1, *), n = shape[axis], outer = shape[..<axis].reduce(1, *)
            var out = [Double](repeating: 0, count: x[0].count)
            for o in 0..<outer { for q in 0..<inner {
                let at = (0..<n).map { (o * n + $0) * inner + q }
                let row = at.map { x[0].data[$0] }, g = x.count > 1 ? at.map { x[1].data[$0] } : []
                let result: [Double]
                switch op.op {
                case .softmax:
                    let m = row.max() ?? 0, e = row.map { Foundation.exp($0 - m) }, total = e.reduce(0, +)
                    result = e.map { $0 / total }
                case .softmax_grad:
                    let total = zip(row, g).reduce(0) { $0 + $1.0 * $1.1 }
                    result = zip(row, g).map { $0 * ($1 - total) }
                default:
                    let mean = row.reduce(0, +) / Double(n)
                    let rstd = 1 / (row.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(n) + eps).squareRoot()
                    let y = row.map { ($0 - mean) * rstd }
                    guard op.op == .normalize_grad else { result = y; break }
                    let gMean = g.reduce(0, +) / Double(n), gyMean = zip(g, y).reduce(0) { $0 + $1.0 * $1.1 } / Double(n)
                    result = zip(g, y).map { ($0 - gMean - $1 * gyMean) * rstd }
                }
                for (i, v) in zip(at, result) { out[i] = v }
            } }
            return Tensor(dtype, shape, out)
        case .stop_gradient:
            switch stopGradientMode {
            case .normal: return x[0]
            case .record: stoppedValues[op.results[0].id] = x[0]; return x[0]
            case .replay: return stoppedValues[op.results[0].id] ?? x[0]
            }
        case .reshape:
            return Tensor(x[0].dtype, shape, x[0].data)
        case .broadcast:
            var out = [Double](repeating: 0, count: shape.reduce(1, *))
            var k = 0
            forEachIndex(shape, [broadcastStrides(x[0].shape, to: shape)]) { o in out[k] = x[0].data[o[0]]; k += 1 }
            return Tensor(dtype, shape, out)
        case .transpose:
            let perm = a["perm"]!.ints!
            let st = strides(x[0].shape)
            var out = [Double](repeating: 0, count: x[0].count)
            var k = 0
            forEachIndex(shape, [perm.map { st[$0] }]) { o in out[k] = x[0].data[o[0]]; k += 1 }
            return Tensor(dtype, shape, out)
        case .slice:
            let starts = try dims(a["starts"], env), steps = a["strides"]!.ints!
            let st = strides(x[0].shape)
            let base = zip(starts, st).map(*).reduce(0, +)
            var out = [Double](repeating: 0, count: shape.reduce(1, *))
            var k = 0
            forEachIndex(shape, [zip(st, steps).map(*)]) { o in out[k] = x[0].data[base + o[0]]; k += 1 }
            return Tensor(dtype, shape, out)
        case .concat:
            let axis = Interpreter.normalize(a["axis"]!.intValue!, shape.count)
            let outer = shape[..<axis].reduce(1, *), inner = shape[(axis + 1)...].reduce(1, *)
            var out: [Double] = []
            out.reserveCapacity(shape.reduce(1, *))
            for o in 0..<outer {
                for t in x {
                    let chunk = t.shape[axis] * inner
                    out += t.data[(o * chunk)..<((o + 1) * chunk)]
                }
            }
            return Tensor(dtype, shape, out)
        case .pad:
            let lo = try dims(a["low"], env)
            let interior = a["interior"]?.ints ?? Array(repeating: 0, count: shape.count)
            var out = [Double](repeating: a["value"]?.doubleValue ?? 0, count: shape.reduce(1, *))
            let ost = strides(shape)
            let base = zip(lo, ost).map(*).reduce(0, +)
            var k = 0
            forEachIndex(x[0].shape, [zip(ost, interior).map { $0 * ($1 + 1) }]) { o in out[base + o[0]] = x[0].data[k]; k += 1 }
            return Tensor(dtype, shape, out)
        case .take:
            let axis = Interpreter.normalize(a["axis"]!.intValue!, x[0].shape.count)
            let outer = x[0].shape[..<axis].reduce(1, *), inner = x[0].shape[(axis + 1)...].reduce(1, *), n = x[0].shape[axis]
            var out: [Double] = []
            out.reserveCapacity(shape.reduce(1, *))
            for o in 0..<outer {
                for idx in x[1].data {
                    let i = exactInt(idx) ?? -1
                    guard i >= 0 && i < n else { throw InterpreterError(message: "take: index \(i) is out of range for size \(n)") }
                    let start = (o * n + i) * inner
                    out += x[0].data[start..<(start + inner)]
                }
            }
            return Tensor(dtype, shape, out)
        case .scatter_add:
            let axis = Interpreter.normalize(a["axis"]!.intValue!, shape.count)
            let outer = shape[..<axis].reduce(1, *), inner = shape[(axis + 1)...].reduce(1, *), n = shape[axis]
            let e = x[1].count
            var out = [Double](repeating: 0, count: shape.reduce(1, *))
            for o in 0..<outer {
                for j in 0..<e {
                    let i = exactInt(x[1].data[j]) ?? -1
                    guard i >= 0 && i < n else { throw InterpreterError(message: "scatter_add: index \(i) is out of range for size \(n)") }
                    for q in 0..<inner { out[(o * n + i) * inner + q] += x[0].data[(o * e + j) * inner + q] }
                }
            }
            return Tensor(dtype, shape, out)
        case .update_slice:
            let axis = Interpreter.normalize(a["axis"]!.intValue!, shape.count)
            let outer = shape[..<axis].reduce(1, *), inner = shape[(axis + 1)...].reduce(1, *), n = shape[axis]
            let i = exactInt(x[2].scalar) ?? -1
            guard i >= 0 && i < n else { throw InterpreterError(message: "update: index \(i) is out of range for size \(n)") }
            var out = x[0].data
            for o in 0..<outer { for q in 0..<inner { out[(o * n + i) * inner + q] = x[1].data[o * inner + q] } }
            return Tensor(dtype, shape, out)
        case .one_hot:
            let depth = a["depth"]!.intValue!
            var out = [Double](repeating: 0, count: shape.reduce(1, *))
            for (j, v) in x[0].data.enumerated() { if let i = exactInt(v), i >= 0 && i < depth { out[j * depth + i] = 1 } }
            return Tensor(.f32, shape, out)
        case .matmul:
            return matmul(x[0], x[1], shape)
        case .conv2d:
            return conv2d(x[0], x[1], shape, stride: a["stride"]!.ints!, pad: a["padding"]!.ints!, dil: a["dilation"]!.ints!)
        case .conv2d_transpose:
            return convTranspose(x[0], x[1], shape, stride: a["stride"]!.ints!, pad: a["padding"]!.ints!)
        case .maxpool2d, .avgpool2d:
            return pool(op.op, x[0], shape, kernel: a["kernel"]!.ints!, stride: a["stride"]!.ints!, pad: a["padding"]!.ints!)
        case .maxpool2d_grad, .avgpool2d_grad:
            return poolGrad(op.op, x[0], x[1], kernel: a["kernel"]!.ints!, stride: a["stride"]!.ints!, pad: a["padding"]!.ints!)
        case .random_uniform, .random_normal, .random_randint, .random_bernoulli, .random_categorical:
            return random(op.op, x, a, dtype: dtype, shape: shape)
        case .rng_fold:
            return .scalar(Double(CounterRNG.fold(key: Int32(truncatingIfNeeded: exactInt(x[0].scalar) ?? 0), Int32(truncatingIfNeeded: exactInt(x[1].scalar) ?? 0))), .i32)
        case .global:
            guard case .symbol(let n)? = a["name"], let g = globals[n] else { throw InterpreterError(message: "unknown global") }
            return g
        default:
            throw InterpreterError(message: "the interpreter has no rule for '\(op.op.name)'")
        }
    }

    static func normalize(_ axis: Int, _ rank: Int) -> Int { axis < 0 ? axis + rank : axis }

    static func unaryRule(_ op: OpKind) -> (Double) -> Double {
        switch op {
        case .neg: return { -$0 }
        case .abs: return { Swift.abs($0) }
        case .exp: return { Foundation.exp($0) }
        case .log: return { Foundation.log($0) }
        case .sqrt: return { Foundation.sqrt($0) }
        case .rsqrt: return { 1 / Foundation.sqrt($0) }
        case .tanh: return { Foundation.tanh($0) }
        case .sigmoid: return { $0 >= 0 ? 1 / (1 + Foundation.exp(-$0)) : Foundation.exp($0) / (1 + Foundation.exp($0)) }
        case .relu: return { $0 > 0 ? $0 : 0 }
        case .gelu: return { 0.5 * $0 * (1 + Foundation.erf($0 / 2.0.squareRoot())) }
        case .silu: return { $0 / (1 + Foundation.exp(-$0)) }
        case .softplus: return { Swift.max($0, 0) + Foundation.log1p(Foundation.exp(-Swift.abs($0))) }
        case .sin: return { Foundation.sin($0) }
        case .cos: return { Foundation.cos($0) }
        case .erf: return { Foundation.erf($0) }
        case .floor: return { Foundation.floor($0) }
        case .sign: return { $0 > 0 ? 1 : $0 < 0 ? -1 : 0 }
        case .not: return { $0 == 0 ? 1 : 0 }
        default: return { $0 }
        }
    }

    static func binaryRule(_ op: OpKind, integer: Bool) -> (Double, Double) -> Double {
        switch op {
        case .add: return { $0 + $1 }
        case .sub: return { $0 - $1 }
        case .mul: return { $0 * $1 }
        case .div:
            if integer { return { (a: Double, b: Double) -> Double in b == 0 ? 0 : (a / b).rounded(.towardZero) } }
            return { $0 / $1 }
        case .pow: return { Foundation.pow($0, $1) }
        case .max: return { Swift.max($0, $1) }
        case .min: return { Swift.min($0, $1) }
        case .mod:
            // Python's %: the result has the sign of the divisor.
            return { (a: Double, b: Double) -> Double in
                if integer && b == 0 { return 0 }
                let q = (a / b).rounded(.down)
                return a - b * q
            }
        case .eq: return { $0 == $1 ? 1 : 0 }
        case .ne: return { $0 != $1 ? 1 : 0 }
        case .lt: return { $0 < $1 ? 1 : 0 }
        case .le: return { $0 <= $1 ? 1 : 0 }
        case .gt: return { $0 > $1 ? 1 : 0 }
        case .ge: return { $0 >= $1 ? 1 : 0 }
        case .and: return { $0 != 0 && $1 != 0 ? 1 : 0 }
        case .or: return { $0 != 0 || $1 != 0 ? 1 : 0 }
        default: return { a, _ in a }
        }
    }

    private func reduce(_ op: OpKind, _ x: Tensor, axes: [Int], dtype: DType, shape: [Int]) -> Tensor {
        let rank = x.shape.count
        let reduced = Set(axes.map { Interpreter.normalize($0, rank) })
        let keptShape = (0..<rank).filter { !reduced.contains($0) }.map { x.shape[$0] }
        let keptStrides = strides(keptShape)
        var outStrides = Array(repeating: 0, count: rank)
        var ki = 0
        for d in 0..<rank where !reduced.contains(d) { outStrides[d] = keptStrides[ki]; ki += 1 }
        let n = keptShape.reduce(1, *)
        let groupSize = reduced.map { x.shape[$0] }.reduce(1, *)
        var groups = [[Double]](repeating: [], count: n)
        forEachIndex(x.shape, [outStrides, strides(x.shape)]) { o in groups[o[0]].append(x.data[o[1]]) }
        let out: [Double] = groups.map { g in
            switch op {
            case .sum: return g.reduce(0, +)
            case .mean: return g.reduce(0, +) / Double(groupSize)
            case .reduce_max: return g.max() ?? -.infinity
            case .reduce_min: return g.min() ?? .infinity
            case .logsumexp:
                let m = g.max() ?? -.infinity
                if !m.isFinite { return m }
                return m + Foundation.log(g.reduce(0) { $0 + Foundation.exp($1 - m) })
            default: // argmax: first maximal index along the (single) axis
                var best = 0
                for (i, v) in g.enumerated() where v > g[best] { best = i }
                return Double(best)
            }
        }
        return Tensor(dtype, shape, out)
    }

    private func matmul(_ a: Tensor, _ b: Tensor, _ shape: [Int]) -> Tensor {
        let m = a.shape[a.shape.count - 2], k = a.shape[a.shape.count - 1], n = b.shape[b.shape.count - 1]
        let batchShape = Array(shape.dropLast(2))
        let aBatch = broadcastStrides(Array(a.shape.dropLast(2)), to: batchShape).map { $0 * m * k }
        let bBatch = broadcastStrides(Array(b.shape.dropLast(2)), to: batchShape).map { $0 * k * n }
        var out = [Double](repeating: 0, count: shape.reduce(1, *))
        var batch = 0
        forEachIndex(batchShape, [aBatch, bBatch]) { o in
            let base = batch * m * n
            for i in 0..<m {
                for p in 0..<k {
                    let av = a.data[o[0] + i * k + p]
                    if av == 0 { continue }
                    for j in 0..<n { out[base + i * n + j] += av * b.data[o[1] + p * n + j] }
                }
            }
            batch += 1
        }
        return Tensor(.f32, shape, out)
    }

    private func conv2d(_ x: Tensor, _ w: Tensor, _ shape: [Int], stride: [Int], pad: [Int], dil: [Int]) -> Tensor {
        let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (o, kh, kw) = (w.shape[0], w.shape[2], w.shape[3])
        let (oh, ow) = (shape[2], shape[3])
        var out = [Double](repeating: 0, count: shape.reduce(1, *))
        for b in 0..<n { for oc in 0..<o { for y in 0..<oh { for xx in 0..<ow {
            var acc = 0.0
            for ic in 0..<c { for i in 0..<kh { for j in 0..<kw {
                let iy = y * stride[0] - pad[0] + i * dil[0], ix = xx * stride[1] - pad[1] + j * dil[1]
                if iy < 0 || iy >= h || ix < 0 || ix >= wd { continue }
                acc += x.data[((b * c + ic) * h + iy) * wd + ix] * w.data[((oc * c + ic) * kh + i) * kw + j]
            } } }
            out[((b * o + oc) * oh + y) * ow + xx] = acc
        } } } }
        return Tensor(.f32, shape, out)
    }

    private func convTranspose(_ x: Tensor, _ w: Tensor, _ shape: [Int], stride: [Int], pad: [Int]) -> Tensor {
        let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (o, kh, kw) = (w.shape[1], w.shape[2], w.shape[3])
        let (oh, ow) = (shape[2], shape[3])
        var out = [Double](repeating: 0, count: shape.reduce(1, *))
        for b in 0..<n { for ic in 0..<c { for y in 0..<h { for xx in 0..<wd {
            let v = x.data[((b * c + ic) * h + y) * wd + xx]
            for oc in 0..<o { for i in 0..<kh { for j in 0..<kw {
                let oy = y * stride[0] - pad[0] + i, ox = xx * stride[1] - pad[1] + j
                if oy < 0 || oy >= oh || ox < 0 || ox >= ow { continue }
                out[((b * o + oc) * oh + oy) * ow + ox] += v * w.data[((ic * o + oc) * kh + i) * kw + j]
            } } }
        } } } }
        return Tensor(.f32, shape, out)
    }

    private func pool(_ op: OpKind, _ x: Tensor, _ shape: [Int], kernel: [Int], stride: [Int], pad: [Int]) -> Tensor {
        let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (oh, ow) = (shape[2], shape[3])
        var out = [Double](repeating: 0, count: shape.reduce(1, *))
        for p in 0..<(n * c) { for y in 0..<oh { for xx in 0..<ow {
            var acc = op == .maxpool2d ? -Double.infinity : 0
            for i in 0..<kernel[0] { for j in 0..<kernel[1] {
                let iy = y * stride[0] - pad[0] + i, ix = xx * stride[1] - pad[1] + j
                if iy < 0 || iy >= h || ix < 0 || ix >= wd { continue }
                let v = x.data[(p * h + iy) * wd + ix]
                acc = op == .maxpool2d ? Swift.max(acc, v) : acc + v
            } }
            out[(p * oh + y) * ow + xx] = op == .maxpool2d ? acc : acc / Double(kernel[0] * kernel[1])
        } } }
        return Tensor(.f32, shape, out)
    }

    private func poolGrad(_ op: OpKind, _ x: Tensor, _ g: Tensor, kernel: [Int], stride: [Int], pad: [Int]) -> Tensor {
        let (h, wd) = (x.shape[2], x.shape[3])
        let (oh, ow) = (g.shape[2], g.shape[3])
        var out = [Double](repeating: 0, count: x.count)
        for p in 0..<(x.shape[0] * x.shape[1]) { for y in 0..<oh { for xx in 0..<ow {
            let gv = g.data[(p * oh + y) * ow + xx]
            var best = -1, bestValue = -Double.infinity
            for i in 0..<kernel[0] { for j in 0..<kernel[1] {
                let iy = y * stride[0] - pad[0] + i, ix = xx * stride[1] - pad[1] + j
                if iy < 0 || iy >= h || ix < 0 || ix >= wd { continue }
                let at = (p * h + iy) * wd + ix
                if op == .avgpool2d_grad { out[at] += gv / Double(kernel[0] * kernel[1]) }
                else if x.data[at] > bestValue { bestValue = x.data[at]; best = at }
            } }
            if op == .maxpool2d_grad && best >= 0 { out[best] += gv }
        } } }
        return Tensor(.f32, x.shape, out)
    }

    private func random(_ op: OpKind, _ x: [Tensor], _ a: [String: Attr], dtype: DType, shape: [Int]) -> Tensor {
        let key = Int32(truncatingIfNeeded: exactInt(x[0].scalar) ?? 0), stream = a["stream"]!.intValue!
        let n = shape.reduce(1, *)
        switch op {
        case .random_uniform:
            let lo = a["low"]!.doubleValue!, hi = a["high"]!.doubleValue!
            return Tensor(.f32, shape, (0..<n).map { lo + (hi - lo) * CounterRNG.uniform(key: key, stream: stream, index: $0) })
        case .random_normal:
            return Tensor(.f32, shape, (0..<n).map { CounterRNG.normal(key: key, stream: stream, index: $0) })
        case .random_randint:
            let lo = a["low"]!.intValue!, span = UInt64(max(1, a["high"]!.intValue! &- lo))
            return Tensor(.i32, shape, (0..<n).map { Double(lo &+ Int(CounterRNG.bits(key: key, stream: stream, index: $0) % span)) })
        case .random_bernoulli:
            return Tensor(.f32, shape, (0..<n).map { CounterRNG.uniform(key: key, stream: stream, index: $0) < x[1].data[$0] ? 1 : 0 })
        default: // categorical: Gumbel-max over the last axis
            let classes = x[1].shape.last!
            return Tensor(.i32, shape, (0..<n).map { row in
                var best = 0, bestScore = -Double.infinity
                for c in 0..<classes {
                    let u = CounterRNG.uniform(key: key, stream: stream, index: row * classes + c)
                    let score = x[1].data[row * classes + c] - Foundation.log(-Foundation.log(u + 0x1p-25))
                    if score > bestScore { bestScore = score; best = c }
                }
                return Double(best)
            })
        }
    }
}
