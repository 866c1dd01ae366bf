import Foundation

/// Reverse-mode automatic differentiation. Each `minimize %loss {optimizer = @o}` of a step
/// function becomes `apply_gradients %loss, %g... {optimizer = @o, params = [...]}`, with the
/// backward graph of the loss with respect to the optimizer's parameters inserted before it.
/// Gradients flow only through f32 values; integer and bool results, `stop_gradient`, random
/// draws and state writes carry none, by rule. An active op without a rule is an error, and all
/// such ops of the program are reported at once with their locations.
enum Autodiff {
    static func run(_ m: Module, _ diags: DiagnosticEngine) -> Module {
        var missing: [Operation] = []
        for f in m.functions where f.kind == .step {
            let minimizes = f.body.operations.filter { $0.op == .minimize }
            if minimizes.count > 1 {
                diags.error("a step function has one 'minimize'; @\(f.name) has \(minimizes.count)", at: minimizes[1].location)
                continue
            }
            guard let at = f.body.operations.firstIndex(where: { $0.op == .minimize }) else { continue }
            let minimize = f.body.operations[at]
            guard case .symbol(let opt)? = minimize.attrs["optimizer"],
                  let params = m.entries.first(where: { $0.kind == .optimizer && $0.name == opt })?.attrs["params"]?.symbols else { continue }
            let forward = Array(f.body.operations[..<at])
            let b = IRBuilder(f)
            b.location = minimize.location
            // The parameters as this function reads them; a parameter it never reads has a zero gradient.
            var loads: [String: Value] = [:]
            for op in forward where op.op == .global { if case .symbol(let n)? = op.attrs["name"] { loads[n] = op.results[0] } }
            do {
                let wrt = params.map { loads[$0] }
                var early: [Int: [Operation]] = [:]
                let grads = try gradients(of: minimize.operands[0], wrt: wrt.compactMap { $0 }, ops: forward, builder: b,
                                          missing: &missing, early: &early, parameters: Set(params))
                var byParam: [Value] = []
                var k = 0
                for (p, load) in zip(params, wrt) {
                    if load != nil { byParam.append(grads[k]); k += 1 } else {
                        byParam.append(try b.constant(0, shape: m.global(p)!.type.shape))
                    }
                }
                b.append(Operation(op: .apply_gradients, operands: [minimize.operands[0]] + byParam, results: [],
                                   attrs: ["optimizer": .symbol(opt), "params": .list(params.map { .symbol($0) })], location: minimize.location))
                f.body.operations.replaceSubrange(0...at, with: placing(early, in: forward) + b.operations)
            } catch let e as InternalError {
                diags.error("internal compiler error in autodiff of @\(f.name): \(e.message)", at: minimize.location)
            } catch {}
        }
        for op in missing {
            diags.error("cannot differentiate '\(op.op.name)': it has no gradient rule\(op.op == .loop ? " (a run-time 'loop' cannot be differentiated; use an unrolled 'for')" : "")", at: op.location)
        }
        return m
    }

    /// Emits into `builder` the gradient of the scalar `loss` with respect to each of `wrt`,
    /// differentiating `ops` (which define `loss`). Returns one gradient per `wrt` value.
    /// `early` gets the ops that compute a derivative in the forward pass, right after the op
    /// (by the op's first result): see `Adjoint.forward`.
    static func gradients(of loss: Value, wrt: [Value], ops: [Operation], builder b: IRBuilder, missing: inout [Operation],
                          early: inout [Int: [Operation]], parameters: Set<String> = []) throws -> [Value] {
        let f = b.function
        var uses: [Int: Int] = [:]
        for op in ops { for v in op.operands { uses[v.id, default: 0] += 1 } }
        // Values that depend on a differentiated input through f32 data flow. A loop depends on
        // them also when its body reads them (directly or as the named parameters).
        var active = Set(wrt.map(\.id))
        func bodyReads(_ block: Block) -> Bool {
            block.operations.contains { op in
                if op.op == .global, case .symbol(let n)? = op.attrs["name"], parameters.contains(n) { return true }
                return op.operands.contains { active.contains($0.id) } || op.regions.contains(where: bodyReads)
            }
        }
        for op in ops where !stops.contains(op.op) && (op.operands.contains(where: { active.contains($0.id) }) || op.regions.contains(where: bodyReads)) {
            for r in op.results where f.type(of: r).dtype == .f32 { active.insert(r.id) }
        }
        // Of those, the ones the loss depends on.
        var needed: Set<Int> = [loss.id]
        var relevant: [Operation] = []
        for op in ops.reversed() where op.results.contains(where: { needed.contains($0.id) && active.contains($0.id) }) {
            relevant.append(op)
            for x in op.operands where active.contains(x.id) { needed.insert(x.id) }
        }
        var adjoint: [Int: Value] = [loss.id: try b.constant(1)]
        func accumulate(_ v: Value, _ g: Value) throws {
            adjoint[v.id] = try adjoint[v.id].map { try b.add($0, g) } ?? g
        }
        for op in relevant {   // already in reverse order
            guard let g = op.results.lazy.compactMap({ adjoint[$0.id] }).first else { continue }
            guard let rule = rules[op.op] else {
                missing.append(op)
                continue
            }
            b.location = op.location
            let needs = op.operands.map { active.contains($0.id) && needed.contains($0.id) }
            let forward = op.operands.allSatisfy({ uses[$0.id] == 1 }) ? IRBuilder(f) : nil
            forward?.location = op.location
            let grads: [Value?]
            do { grads = try rule(b, Adjoint(op: op, x: op.operands, y: op.results[0], g: g, needs: needs, forward: forward)) } catch is Unsupported {
                missing.append(op)
                continue
            }
            if let derivatives = forward?.operations, !derivatives.isEmpty { early[op.results[0].id] = derivatives }
            for (i, x) in op.operands.enumerated() where needs[i] {
                if let gx = grads[i] { try accumulate(x, gx) }
            }
        }
        return try wrt.map { try adjoint[$0.id] ?? b.zeros(like: $0) }
    }

    /// `ops` with the derivatives `gradients` computes in the forward pass right after their ops.
    static func placing(_ early: [Int: [Operation]], in ops: [Operation]) -> [Operation] {
        ops.flatMap { op in [op] + (op.results.first.flatMap { early[$0.id] } ?? []) }
    }

    /// Ops through which no gradient flows, by definition.
    static let stops: Set<OpKind> = [.stop_gradient, .random_uniform, .random_normal, .random_bernoulli, .random_categorical,
                                     .random_randint, .floor, .sign, .argmax, .global_set, .minimize, .apply_gradients]

    /// What an adjoint rule sees: the op, its operands `x`, its result `y`, the result's adjoint
    /// `g`, and which operands need a gradient. When the op is its operands' only use, `forward`
    /// builds ops that run right after it in the forward pass: a derivative that costs
    /// transcendental math (GELU's, SiLU's, softplus's) is computed there, from x still in cache, and the
    /// backward pass keeps the derivative instead of x (same size; x dies in the forward pass).
    struct Adjoint {
        let op: Operation
        let x: [Value]
        let y: Value
        let g: Value
        let needs: [Bool]
        var forward: IRBuilder? = nil
        func attr(_ n: String) -> Attr? { op.attrs[n] }
    }
    typealias Rule = (IRBuilder, Adjoint) throws -> [Value?]

    /// The adjoint of each op: operand gradients from the result's gradient (nil: none).
    static let rules: [OpKind: Rule] = [
        .neg: { b, a in [try b.neg(a.g)] },
        .abs: { b, a in [try b.mul(a.g, try b.emit(.sign, [a.x[0]]))] },
        .exp: { b, a in [try b.mul(a.g, a.y)] },
        .log: { b, a in [try b.div(a.g, a.x[0])] },
        .sqrt: { b, a in [try b.div(try b.scale(a.g, 0.5), a.y)] },
        .rsqrt: { b, a in [try b.mul(try b.scale(a.g, -0.5), try b.mul(a.y, try b.mul(a.y, a.y)))] },
        .tanh: { b, a in [try b.mul(a.g, try b.sub(try b.constant(1), try b.mul(a.y, a.y)))] },
        .sigmoid: { b, a in [try b.mul(a.g, try b.mul(a.y, try b.sub(try b.constant(1), a.y)))] },
        // relu(x) > 0 exactly where x > 0; testing the result leaves x a single use, so that x
        // (a bias-add) can fuse into the kernel of its producer.
        .relu: { b, a in [try b.emit(.select, [try b.emit(.gt, [a.y, try b.constant(0)]), a.g, try b.constant(0)])] },
        .gelu: { b, a in
            let (x, d) = (a.x[0], a.forward ?? b)
            let cdf = try d.scale(try d.add(try d.constant(1), try d.emit(.erf, [try d.scale(x, 1 / 2.0.squareRoot())])), 0.5)
            let pdf = try d.scale(try d.emit(.exp, [try d.scale(try d.mul(x, x), -0.5)]), 1 / (2 * Double.pi).squareRoot())
            return [try b.mul(a.g, try d.add(cdf, try d.mul(x, pdf)))]
        },
        // silu'(x) = s + x s (1 - s) = y + s (1 - y) with s = sigmoid(x), y = silu(x): written with y,
        // s has one use, so the fusion plan computes it inline and the derivative stays in the
        // forward kernel (the backward pass keeps one buffer instead of x and s).
        .silu: { b, a in
            let d = a.forward ?? b
            let s = try d.emit(.sigmoid, [a.x[0]])
            return [try b.mul(a.g, try d.add(a.y, try d.mul(s, try d.sub(try d.constant(1), a.y))))]
        },
        .softplus: { b, a in [try b.mul(a.g, try (a.forward ?? b).emit(.sigmoid, [a.x[0]]))] },
        .sin: { b, a in [try b.mul(a.g, try b.emit(.cos, [a.x[0]]))] },
        .cos: { b, a in [try b.neg(try b.mul(a.g, try b.emit(.sin, [a.x[0]])))] },
        .erf: { b, a in
            let x = a.x[0]
            return [try b.mul(a.g, try b.scale(try b.emit(.exp, [try b.neg(try b.mul(x, x))]), 2 / Double.pi.squareRoot()))]
        },
        .add: { b, a in [try b.unbroadcast(a.g, to: b.shape(a.x[0])), try b.unbroadcast(a.g, to: b.shape(a.x[1]))] },
        .sub: { b, a in [try b.unbroadcast(a.g, to: b.shape(a.x[0])), a.needs[1] ? try b.unbroadcast(try b.neg(a.g), to: b.shape(a.x[1])) : nil] },
        .mul: { b, a in
            [a.needs[0] ? try b.unbroadcast(try b.mul(a.g, a.x[1]), to: b.shape(a.x[0])) : nil,
             a.needs[1] ? try b.unbroadcast(try b.mul(a.g, a.x[0]), to: b.shape(a.x[1])) : nil]
        },
        .div: { b, a in
            [a.needs[0] ? try b.unbroadcast(try b.div(a.g, a.x[1]), to: b.shape(a.x[0])) : nil,
             a.needs[1] ? try b.unbroadcast(try b.neg(try b.div(try b.mul(a.g, a.y), a.x[1])), to: b.shape(a.x[1])) : nil]
        },
        .pow: { b, a in
            let (base, e) = (a.x[0], a.x[1])
            return [a.needs[0] ? try b.unbroadcast(try b.mul(a.g, try b.mul(e, try b.emit(.pow, [base, try b.sub(e, try b.constant(1))]))), to: b.shape(base)) : nil,
                    a.needs[1] ? try b.unbroadcast(try b.mul(a.g, try b.mul(a.y, try b.emit(.log, [base]))), to: b.shape(e)) : nil]
        },
        // Ties split the gradient evenly: the central difference of max(a, b) at a == b.
        .max: { b, a in try extremum(b, a, .gt) },
        .min: { b, a in try extremum(b, a, .lt) },
        .mod: { b, a in
            [try b.unbroadcast(a.g, to: b.shape(a.x[0])),
             a.needs[1] ? try b.unbroadcast(try b.neg(try b.mul(a.g, try b.emit(.floor, [try b.div(a.x[0], a.x[1])]))), to: b.shape(a.x[1])) : nil]
        },
        .select: { b, a in
            let zero = try b.constant(0)
            return [nil,
                    a.needs[1] ? try b.unbroadcast(try b.emit(.select, [a.x[0], a.g, zero]), to: b.shape(a.x[1])) : nil,
                    a.needs[2] ? try b.unbroadcast(try b.emit(.select, [a.x[0], zero, a.g]), to: b.shape(a.x[2])) : nil]
        },
        .cast: { _, a in [a.g] },
        .sum: { b, a in [try b.expandReduced(a.g, axes: a.attr("axes")!.ints!, keepdims: a.attr("keepdims") == .bool(true), to: b.shape(a.x[0]))] },
        .mean: { b, a in
            let axes = normalizedAxes(a.attr("axes")!.ints!, rank: b.shape(a.x[0]).count)
            let count = axes.map { b.shape(a.x[0])[$0] }.reduce(Dim(1), *)
            let spread = try b.expandReduced(a.g, axes: axes, keepdims: a.attr("keepdims") == .bool(true), to: b.shape(a.x[0]))
            return [try b.div(spread, try b.size(count))]
        },
        .reduce_max: { b, a in try reducedExtremum(b, a) },
        .reduce_min: { b, a in try reducedExtremum(b, a) },
        .logsumexp: { b, a in
            let axes = a.attr("axes")!.ints!, keep = a.attr("keepdims") == .bool(true), s = b.shape(a.x[0])
            let y = try b.expandReduced(a.y, axes: axes, keepdims: keep, to: s)
            return [try b.mul(try b.expandReduced(a.g, axes: axes, keepdims: keep, to: s), try b.emit(.exp, [try b.sub(a.x[0], y)]))]
        },
        .softmax: { b, a in [try b.emit(.softmax_grad, [a.y, a.g], a.op.attrs)] },
        .normalize: { b, a in [try b.emit(.normalize_grad, [a.x[0], a.g], a.op.attrs)] },
        .cumsum: { b, a in
            // Suffix sums: total - cumsum(g) + g.
            let axis = a.attr("axis")!.intValue!
            let total = try b.broadcast(try b.emit(.sum, [a.g], ["axes": .ints([axis < 0 ? axis + b.shape(a.g).count : axis]), "keepdims": .bool(true)]), to: b.shape(a.g))
            return [try b.add(try b.sub(total, try b.emit(.cumsum, [a.g], ["axis": .int(axis)])), a.g)]
        },
        .reshape: { b, a in [try b.reshape(a.g, b.shape(a.x[0]))] },
        .stop_gradient: { _, _ in [nil] },
        .transpose: { b, a in
            let perm = a.attr("perm")!.ints!
            var inverse = perm
            for (i, p) in perm.enumerated() { inverse[p] = i }
            return [try b.transpose(a.g, inverse)]
        },
        .broadcast: { b, a in [try b.unbroadcast(a.g, to: b.shape(a.x[0]))] },
        .slice: { b, a in
            // Zeros around the slice, with stride-1 zeros between its elements.
            let starts = a.attr("starts")!.dims!, strides = a.attr("strides")!.ints!
            let size = b.shape(a.x[0]), out = b.shape(a.y)
            var high: [Dim] = []
            for i in 0..<size.count {
                high.append(out[i] == 0 ? size[i] - starts[i] : size[i] - starts[i] - (out[i] - Dim(1)) * Dim(strides[i]) - Dim(1))
            }
            return [try b.emit(.pad, [a.g], ["low": .dims(starts), "high": .dims(high), "interior": .ints(strides.map { $0 - 1 }), "value": .float(0)])]
        },
        .concat: { b, a in
            let s = b.shape(a.y)
            let axis = a.attr("axis")!.intValue! < 0 ? a.attr("axis")!.intValue! + s.count : a.attr("axis")!.intValue!
            var offset = Dim(0)
            var out: [Value?] = []
            for x in a.x {
                let n = b.shape(x)[axis]
                var starts = Array(repeating: Dim(0), count: s.count), ends = s
                starts[axis] = offset
                ends[axis] = offset + n
                out.append(try b.emit(.slice, [a.g], ["starts": .dims(starts), "ends": .dims(ends), "strides": .ints(Array(repeating: 1, count: s.count))]))
                offset = offset + n
            }
            return out
        },
        .pad: { b, a in
            let low = a.attr("low")!.dims!, n = b.shape(a.x[0])
            let interior = a.attr("interior")?.ints ?? Array(repeating: 0, count: n.count)
            let ends = (0..<n.count).map { low[$0] + (n[$0] == 0 ? Dim(0) : (n[$0] - Dim(1)) * Dim(interior[$0] + 1) + Dim(1)) }
            return [try b.emit(.slice, [a.g], ["starts": .dims(low), "ends": .dims(ends), "strides": .ints(interior.map { $0 + 1 })])]
        },
        .take: { b, a in
            let s = b.shape(a.x[0])
            let axis = a.attr("axis")!.intValue! < 0 ? a.attr("axis")!.intValue! + s.count : a.attr("axis")!.intValue!
            let count = b.shape(a.x[1]).reduce(Dim(1), *)
            let flat = try b.reshape(a.g, Array(s[..<axis]) + [count] + Array(s[(axis + 1)...]))
            let index = try b.reshape(a.x[1], [count])
            let size: Attr = s[axis].constant.map(Attr.int) ?? .dim(s[axis])
            return [try b.emit(.scatter_add, [flat, index], ["axis": .int(axis), "size": size]), nil]
        },
        .scatter_add: { b, a in [try b.emit(.take, [a.g, a.x[1]], ["axis": a.attr("axis")!]), nil] },
        .update_slice: { b, a in
            let axis = a.attr("axis")!
            return [a.needs[0] ? try b.emit(.update_slice, [a.g, try b.zeros(like: a.x[1]), a.x[2]], ["axis": axis]) : nil,
                    a.needs[1] ? try b.emit(.take, [a.g, a.x[2]], ["axis": axis]) : nil, nil]
        },
        .matmul: { b, a in
            func swapLast(_ v: Value) throws -> Value {
                let r = b.shape(v).count
                var perm = Array(0..<r)
                perm.swapAt(r - 1, r - 2)
                return try b.transpose(v, perm)
            }
            return [a.needs[0] ? try b.unbroadcast(try b.emit(.matmul, [a.g, try swapLast(a.x[1])]), to: b.shape(a.x[0])) : nil,
                    a.needs[1] ? try b.unbroadcast(try b.emit(.matmul, [try swapLast(a.x[0]), a.g]), to: b.shape(a.x[1])) : nil]
        },
        .conv2d: { b, a in
            let (x, w) = (a.x[0], a.x[1])
            let stride = a.attr("stride")!.ints!, pad = a.attr("padding")!.ints!, dilation = a.attr("dilation")!.ints!
            guard dilation == [1, 1] else { throw Unsupported() }
            let xs = b.shape(x), ws = b.shape(w), ys = b.shape(a.y)
            var gx: Value?
            if a.needs[0] {
                let extra = (0..<2).map { xs[2 + $0].constant! - ((ys[2 + $0].constant! - 1) * stride[$0] - 2 * pad[$0] + ws[2 + $0].constant!) }
                gx = try b.emit(.conv2d_transpose, [a.g, w], ["stride": .ints(stride), "padding": .ints(pad), "output_padding": .ints(extra)])
            }
            var gw: Value?
            if a.needs[1] {
                // The weight gradient is a correlation of the input with the output gradient.
                let c = try b.emit(.conv2d, [try b.transpose(x, [1, 0, 2, 3]), try b.transpose(a.g, [1, 0, 2, 3])],
                                   ["stride": .ints([1, 1]), "padding": .ints(pad), "dilation": .ints(stride)])
                let cs = b.shape(c)
                let cut = try b.emit(.slice, [c], ["starts": .ints([0, 0, 0, 0]), "ends": .dims([cs[0], cs[1], ws[2], ws[3]]), "strides": .ints([1, 1, 1, 1])])
                gw = try b.transpose(cut, [1, 0, 2, 3])
            }
            return [gx, gw]
        },
        .conv2d_transpose: { b, a in
            let (x, w) = (a.x[0], a.x[1])
            let stride = a.attr("stride")!.ints!, pad = a.attr("padding")!.ints!
            let ws = b.shape(w)
            var gx: Value?
            if a.needs[0] {
                gx = try b.emit(.conv2d, [a.g, w], ["stride": .ints(stride), "padding": .ints(pad), "dilation": .ints([1, 1])])
            }
            var gw: Value?
            if a.needs[1] {
                let c = try b.emit(.conv2d, [try b.transpose(a.g, [1, 0, 2, 3]), try b.transpose(x, [1, 0, 2, 3])],
                                   ["stride": .ints([1, 1]), "padding": .ints(pad), "dilation": .ints(stride)])
                let cs = b.shape(c)
                let cut = try b.emit(.slice, [c], ["starts": .ints([0, 0, 0, 0]), "ends": .dims([cs[0], cs[1], ws[2], ws[3]]), "strides": .ints([1, 1, 1, 1])])
                gw = try b.transpose(cut, [1, 0, 2, 3])
            }
            return [gx, gw]
        },
        .maxpool2d: { b, a in [try b.emit(.maxpool2d_grad, [a.x[0], a.g], a.op.attrs)] },
        .avgpool2d: { b, a in [try b.emit(.avgpool2d_grad, [a.x[0], a.g], a.op.attrs)] },
        .global: { _, _ in [] },
    ]

    /// A rule that does not cover this op's attributes (reported like a missing rule).
    struct Unsupported: Error {}

    /// maximum/minimum: the gradient goes to the larger (smaller) operand, half to each on ties.
    private static func extremum(_ b: IRBuilder, _ a: Adjoint, _ wins: OpKind) throws -> [Value?] {
        let (l, r) = (a.x[0], a.x[1])
        let weight = try b.emit(.select, [try b.emit(wins, [l, r]), try b.constant(1),
                                          try b.emit(.select, [try b.emit(.eq, [l, r]), try b.constant(0.5), try b.constant(0)])])
        return [a.needs[0] ? try b.unbroadcast(try b.mul(a.g, weight), to: b.shape(l)) : nil,
                a.needs[1] ? try b.unbroadcast(try b.mul(a.g, try b.sub(try b.constant(1), weight)), to: b.shape(r)) : nil]
    }

    /// max/min over axes: the gradient is shared evenly by the elements equal to the extremum.
    private static func reducedExtremum(_ b: IRBuilder, _ a: Adjoint) throws -> [Value?] {
        let s = b.shape(a.x[0]), axes = normalizedAxes(a.attr("axes")!.ints!, rank: s.count), keep = a.attr("keepdims") == .bool(true)
        let y = try b.expandReduced(a.y, axes: axes, keepdims: keep, to: s)
        let mask = try b.emit(.cast, [try b.emit(.eq, [a.x[0], y])], ["dtype": .dtype(.f32)])
        let count = try b.broadcast(try b.emit(.sum, [mask], ["axes": .ints(axes), "keepdims": .bool(true)]), to: s)
        return [try b.mul(try b.expandReduced(a.g, axes: axes, keepdims: keep, to: s), try b.div(mask, count))]
    }
}
