/// The lowering rule of every op that computes a new buffer: one kernel per op. The result
/// buffer is always the kernel's first buffer. Scratch buffers (im2col columns) are
/// allocated around the kernel by `lowerBlock`.
extension FunctionLowering {
    func type(_ v: Value) -> TensorType { function.type(of: v) }
    func buf(_ v: Value) -> BufferID { bufferOf[v.id]! }

    /// A kernel for `op` reading `buffers` (result first) and whatever `body` loads.
    mutating func makeKernel(_ op: Operation, _ buffers: [BufferID], _ body: [KernelStmt]) -> Kernel {
        kernelCount += 1
        var unique: [BufferID] = []
        for b in buffers + body.flatMap(\.buffersTouched) where !unique.contains(b) { unique.append(b) }
        let ops = fusedOps(op)
        let name = ops.count == 1 ? op.op.name : "fused\(ops.count).\(op.op.name)"
        return Kernel(name: "\(function.name).k\(kernelCount).\(name)", buffers: unique, body: body)
    }

    /// The scalar computation of an elementwise op from its operands' elements.
    static func elementwise(_ op: Operation, _ x: [ScalarExpr]) -> ScalarExpr {
        switch op.op {
        case .select: return .select(x[0], x[1], x[2])
        case .cast:
            guard case .dtype(let d)? = op.attrs["dtype"] else { return x[0] }
            return .convert(x[0], ScalarType(d))
        case _ where OpKind.unary.contains(op.op): return .unary(ScalarOp(rawValue: op.op.name)!, x[0])
        default: return .binary(ScalarOp(rawValue: op.op.name)!, x[0], x[1])
        }
    }

    func axis(_ op: Operation, _ key: String = "axis", rank: Int) -> Int {
        let a = op.attrs[key]?.intValue ?? 0
        return a < 0 ? a + rank : a
    }
    func product(_ dims: ArraySlice<Dim>) -> ScalarExpr { ScalarExpr(dims.reduce(Dim(1), *)) }
    func dims(_ op: Operation, _ key: String) -> [Dim] { op.attrs[key]?.dims ?? [] }
    func ints(_ op: Operation, _ key: String) -> [Int] { op.attrs[key]?.ints ?? [] }

    mutating func lowerOp(_ op: Operation, result out: BufferID) throws -> Kernel {
        let rt = type(op.results[0])
        let shape = rt.shape
        // Fused values and folded transposes have no buffer: the ops that read them do so
        // through `element` and `matrixView`, never through `operands`.
        let operands = op.operands.map { bufferOf[$0.id] ?? BufferID(id: -1) }
        let types = op.operands.map(type)
        let count = ScalarExpr(rt.shape.reduce(Dim(1), *))
        let fill = { (value: ScalarExpr) -> KernelStmt in .parallel("i", count, [.store(out, .v("i"), value)], work: 1) }

        switch op.op {
        case _ where epilogues[op.results[0].id] != nil:
            return makeKernel(op, [out], epilogue(op, epilogues[op.results[0].id]!, out: out))

        case _ where Self.elementwiseOps.contains(op.op) || op.op == .broadcast:
            return makeKernel(op, [out], elementwiseLoop(op, out: out))

        case .constant:
            let st = ScalarType(rt.dtype)
            if case .list(let items)? = op.attrs["value"] {
                return makeKernel(op, [out], [fill(.table(items.map { $0.doubleValue ?? 0 }, st, .v("i")))])
            }
            return makeKernel(op, [out], [fill(.constant(op.attrs["value"]?.doubleValue ?? 0, st))])

        case .iota:
            let a = axis(op, rank: shape.count)
            return makeKernel(op, [out], loopNest(shape) { idx in [.store(out, flatIndex(idx, shape), .convert(idx[a], .i32))] })

        case .sym:
            guard let d = op.attrs["dim"]?.dimValue else { throw fail("'sym' without a size") }
            return makeKernel(op, [out], [.store(out, .index(0), .convert(ScalarExpr(d), .i32))])

        case .sum where summedProducts.contains(op.results[0].id):
            return makeKernel(op, [out], summedMatmul(producers[op.operands[0].id]!, out: out))

        case .sum, .mean, .reduce_max, .reduce_min, .logsumexp, .argmax:
            return makeKernel(op, [out], reduction(op, input: op.operands[0], inputShape: types[0].shape, out: out))

        case .cumsum:
            let s = types[0].shape, a = axis(op, rank: s.count)
            let outer = product(s[..<a]), n = ScalarExpr(s[a]), inner = product(s[(a + 1)...])
            let at = (ScalarExpr.v("o") * n + .v("j")) * inner + .v("q")
            return makeKernel(op, [out, operands[0]], [.loop("o", outer, [.loop("q", inner, [
                .declare("acc", .constant(0, ScalarType(rt.dtype))),
                .loop("j", n, [.accumulate("acc", .add, .load(operands[0], at)), .store(out, at, .v("acc"))]),
            ])])])

        case .normalize, .normalize_grad, .softmax, .softmax_grad:
            return makeKernel(op, [out], rowKernel(op, out: out))

        case .transpose where transposedProducts[op.results[0].id] != nil:
            return makeKernel(op, [out], matmul(transposedProducts[op.results[0].id]!, out: out, written: op))

        case .transpose:
            // Output axes that are adjacent input axes, in order, move as one: a [1, 0, 2, 3]
            // transpose copies whole planes.
            let perm = ints(op, "perm")
            let runs = mergingRuns(shape) { perm[$1] == perm[$0] + 1 }
            let inputOrder = runs.firsts.indices.sorted { perm[runs.firsts[$0]] < perm[runs.firsts[$1]] }
            let inStrides = rowMajorStrides(inputOrder.map { runs.shape[$0] })
            let source = runs.firsts.indices.map { inStrides[inputOrder.firstIndex(of: $0)!] }
            return makeKernel(op, [out, operands[0]], parallelNest(runs.shape) { idx in
                [.store(out, flatIndex(idx, runs.shape), .load(operands[0], zip(idx, source).reduce(ScalarExpr.index(0)) { $0 + $1.0 * $1.1 }))]
            })

        case _ where indexRemap(op):
            return makeKernel(op, [out], elementwiseLoop(op, out: out))

        case .concat:
            return makeKernel(op, [out], concatenation(op, out: out))

        case .pad:
            // With interior padding: the fill, then each element of x at its place.
            let low = dims(op, "low"), interior = ints(op, "interior"), xs = types[0].shape
            let value = ScalarExpr.constant(op.attrs["value"]?.doubleValue ?? 0, ScalarType(rt.dtype))
            let scatter = parallelNest(xs) { idx in
                let target = idx.indices.map { ScalarExpr(low[$0]) + idx[$0] * .index(interior[$0] + 1) }
                return [.store(out, flatIndex(target, shape), element(op.operands[0], idx, space: xs))]
            }
            return makeKernel(op, [out], [fill(value)] + scatter)

        case .take:
            let s = types[0].shape, a = axis(op, rank: s.count)
            let outer = product(s[..<a]), n = ScalarExpr(s[a]), inner = product(s[(a + 1)...])
            let m = ScalarExpr(types[1].shape.reduce(Dim(1), *))
            return makeKernel(op, [out, operands[0], operands[1]], [.loop("o", outer, [.loop("j", m, [
                .bind("k", .convert(.load(operands[1], .v("j")), .index)),
                .fail(ScalarExpr.v("k").lt(.index(0)).or(ScalarExpr.v("k").ge(n)), 2, "take: an index is out of range"),
                .loop("q", inner, [.store(out, (ScalarExpr.v("o") * m + .v("j")) * inner + .v("q"),
                                          .load(operands[0], (ScalarExpr.v("o") * n + .v("k")) * inner + .v("q")))]),
            ])])])

        case .scatter_add:
            let a = axis(op, rank: shape.count)
            let outer = product(shape[..<a]), n = ScalarExpr(shape[a]), inner = product(shape[(a + 1)...])
            let e = ScalarExpr(types[1].shape.reduce(Dim(1), *))
            let at = (ScalarExpr.v("o") * n + .v("k")) * inner + .v("q")
            return makeKernel(op, [out, operands[0], operands[1]], [fill(.f32(0)), .loop("o", outer, [.loop("j", e, [
                .bind("k", .convert(.load(operands[1], .v("j")), .index)),
                .fail(ScalarExpr.v("k").lt(.index(0)).or(ScalarExpr.v("k").ge(n)), 2, "scatter_add: an index is out of range"),
                .loop("q", inner, [.store(out, at, .binary(.add, .load(out, at), .load(operands[0], (ScalarExpr.v("o") * e + .v("j")) * inner + .v("q"))))]),
            ])])])

        case .update_slice:
            let a = axis(op, rank: shape.count)
            let outer = product(shape[..<a]), n = ScalarExpr(shape[a]), inner = product(shape[(a + 1)...])
            sliceUpdates[out] = operands[0]
            // The copy comes first: updateSlicesInPlace drops it when the update can write its operand.
            return makeKernel(op, [out] + operands, [
                fill(.load(operands[0], .v("i"))),
                .bind("k", .convert(.load(operands[2], .index(0)), .index)),
                .fail(ScalarExpr.v("k").lt(.index(0)).or(ScalarExpr.v("k").ge(n)), 2, "update: the index is out of range"),
                .loop("o", outer, [.loop("q", inner, [
                    .store(out, (ScalarExpr.v("o") * n + .v("k")) * inner + .v("q"), .load(operands[1], .v("o") * inner + .v("q"))),
                ])]),
            ])

        case .one_hot:
            let depth = ScalarExpr.index(op.attrs["depth"]?.intValue ?? 0)
            let m = ScalarExpr(types[0].shape.reduce(Dim(1), *))
            return makeKernel(op, [out, operands[0]], [fill(.f32(0)), .loop("j", m, [
                .bind("k", .convert(.load(operands[0], .v("j")), .index)),
                .when(ScalarExpr.index(0).lt(.v("k") + .index(1)).and(ScalarExpr.v("k").lt(depth)), [.store(out, .v("j") * depth + .v("k"), .f32(1))]),
            ])])

        case .matmul:
            return makeKernel(op, [out], matmul(op, out: out))

        case .conv2d:
            return makeKernel(op, [out], convolution(op, out: out))
        case .conv2d_transpose:
            return makeKernel(op, [out] + operands, transposedConvolution(op, out: out))
        case .maxpool2d, .avgpool2d, .maxpool2d_grad, .avgpool2d_grad:
            return makeKernel(op, [out] + operands, pooling(op, out: out))

        case .random_uniform, .random_normal, .random_randint, .random_bernoulli, .random_categorical:
            return makeKernel(op, [out] + operands, random(op, out: out, count: count))

        case .rng_fold:
            return makeKernel(op, [out] + operands, [.store(out, .index(0), .call(.rngFold, [.load(operands[0], .index(0)), .load(operands[1], .index(0))]))])

        default:
            throw fail("no lowering for '\(op.op.name)'")
        }
    }

    // MARK: reductions

    /// The input is read through `element`, so fused producers are computed in the reduction's loops.
    /// Columns per parallel block of a reduction that keeps the last axis.
    static let columnBlock = 64
    /// Rows reduced to one: at most this many parts of at least this many rows, in blocks of this many columns.
    static let rowParts = 8, rowPartMinimum = 256, rowPartBlock = 512

    /// `terms` combined as a balanced tree (8 rows added pairwise, not one after another).
    static func tree(_ terms: [ScalarExpr], _ combine: ScalarOp) -> ScalarExpr {
        var level = terms
        while level.count > 1 {
            level = stride(from: 0, to: level.count, by: 2).map { $0 + 1 < level.count ? .binary(combine, level[$0], level[$0 + 1]) : level[$0] }
        }
        return level[0]
    }

    /// Loops over `count` rows from `first`, `update` taking 8 rows at a time, then the rest one by one.
    static func byEights(from first: ScalarExpr, count: ScalarExpr, _ update: ([ScalarExpr]) -> [KernelStmt]) -> [KernelStmt] {
        let eight = ScalarExpr.index(8)
        return [.loop("r", count / eight, update((0..<8).map { first + .v("r") * eight + .index($0) })),
                .loop("r", count % eight, update([first + count / eight * eight + .v("r")]))]
    }

    mutating func reduction(_ op: Operation, input: Value, inputShape full: [Dim], out: BufferID) -> [KernelStmt] {
        let given = Set(op.op == .argmax ? [axis(op, rank: full.count)] : normalizedAxes(ints(op, "axes"), rank: full.count))
        // Adjacent axes both reduced or both kept are one axis when the input is read at flat
        // indices: a bias gradient over [B, C, H, W] adds runs of H*W contiguous elements.
        let flat = flatReadable(input, space: full)
        let (s, firsts) = flat ? mergingRuns(full) { given.contains($0) == given.contains($1) } : (full, Array(full.indices))
        let rank = s.count
        let axes = Set(firsts.indices.filter { given.contains(firsts[$0]) })
        func read(_ idx: [ScalarExpr]) -> ScalarExpr { flat ? element(input, [], space: full, flat: flatIndex(idx, s)) : element(input, idx, space: full) }
        let kept = (0..<rank).filter { !axes.contains($0) }
        let reducedAxes = (0..<rank).filter { axes.contains($0) }
        let keptShape = kept.map { s[$0] }
        let groupSize = ScalarExpr(reducedAxes.map { s[$0] }.reduce(Dim(1), *))
        func at(_ keptIdx: [ScalarExpr], _ redIdx: [ScalarExpr]) -> ScalarExpr {
            var idx = [ScalarExpr](repeating: .index(0), count: rank)
            for (k, i) in zip(kept, keptIdx) { idx[k] = i }
            for (r, i) in zip(reducedAxes, redIdx) { idx[r] = i }
            return read(idx)
        }
        let identity: Double = op.op == .reduce_max ? -.infinity : op.op == .reduce_min ? .infinity : 0
        let combine: ScalarOp = op.op == .reduce_max ? .max : op.op == .reduce_min ? .min : .add
        let outCount = ScalarExpr(keptShape.reduce(Dim(1), *))

        // Rows reduced to one (a bias gradient over [B*T, C]): fixed parts of the rows (at least
        // 256 rows each, at most 8 parts: set by the shape, not the threads) times blocks of 512
        // columns run in parallel, each reading its rows whole, 8 at a time, into its own partial
        // result; the partials then combine in part order.
        if [.sum, .mean, .reduce_max, .reduce_min].contains(op.op), rank == 2, reducedAxes == [0] {
            let rows = ScalarExpr(s[0]), width = ScalarExpr(s[1]), block = ScalarExpr.index(Self.rowPartBlock)
            let parts = ScalarExpr.binary(.max, .index(1), .binary(.min, .index(Self.rowParts), rows / .index(Self.rowPartMinimum)))
            let blocks = (width + block - .index(1)) / block, perPart = (rows + parts - .index(1)) / parts
            let partial = scratch("partials", TensorType(.f32, [Dim(Self.rowParts), s[1]]))
            let column = ScalarExpr.v("jb") * block + .v("jj")
            let target = ScalarExpr.v("p") * width + column
            let columns = ScalarExpr.binary(.min, block, width - .v("jb") * block), first = ScalarExpr.v("first")
            let part: [KernelStmt] = [
                .bind("p", .v("t") / blocks), .bind("jb", .v("t") % blocks),
                .bind("first", .v("p") * perPart), .bind("count", .binary(.min, perPart, rows - first)),
                .loop("jj", columns, [.store(partial, target, .f32(identity))]),
            ] + Self.byEights(from: first, count: .v("count")) { rowsRead in
                [.loop("jj", columns, [.store(partial, target, .binary(combine, .load(partial, target), Self.tree(rowsRead.map { read([$0, column]) }, combine)))])]
            }
            let total = ScalarExpr.v("acc")
            return [
                .parallel("t", parts * blocks, part, work: staticWork([s[0]]) / Self.rowParts * Self.rowPartBlock),
                .parallel("j", width, [
                    .declare("acc", .f32(identity)),
                    .loop("p", parts, [.assign("acc", .binary(combine, total, .load(partial, .v("p") * width + .v("j"))))]),
                    .store(out, .v("j"), op.op == .mean ? .binary(.div, total, .convert(groupSize, .f32)) : total),
                ], work: Self.rowParts),
            ]
        }
        // Sums, means, maxima and minima that keep the last axis accumulate into the output in input
        // order, so the innermost loop runs along contiguous rows of both buffers and vectorizes;
        // blocks of the last axis run in parallel (each output element still adds its inputs in order).
        // When the rows are reduced, each update of the output adds 8 rows: an update per row
        // would wait on the previous row's store.
        if [.sum, .mean, .reduce_max, .reduce_min].contains(op.op), let last = kept.last, last == rank - 1, !reducedAxes.isEmpty {
            let outStrides = rowMajorStrides(keptShape)
            let width = ScalarExpr(s[rank - 1]), block = ScalarExpr.index(Self.columnBlock)
            var body: [KernelStmt] = [.parallel("i", outCount, [.store(out, .v("i"), .f32(identity))], work: 1)]
            let column = ScalarExpr.v("jb") * block + .v("jj")
            func update(_ lead: [ScalarExpr], rows: [ScalarExpr]) -> [KernelStmt] {
                let all = lead + [rows[0], column]
                let o = kept.enumerated().reduce(ScalarExpr.index(0)) { $0 + all[$1.element] * outStrides[$1.offset] }
                let terms = Self.tree(rows.map { read(lead + [$0, column]) }, combine)
                return [.loop("jj", .binary(.min, block, width - .v("jb") * block), [.store(out, o, .binary(combine, .load(out, o), terms))])]
            }
            let rows = ScalarExpr(s[rank - 2])
            let columns = loopNest(Array(s.dropLast(2))) { lead in
                guard reducedAxes.contains(rank - 2) else { return [.loop("r", rows, update(lead, rows: [.v("r")]))] }
                return Self.byEights(from: .index(0), count: rows) { update(lead, rows: $0) }
            }
            body.append(.parallel("jb", (width + block - .index(1)) / block, columns, work: staticWork(s.dropLast()[...]) * Self.columnBlock))
            if op.op == .mean {
                body.append(.parallel("i", outCount, [.store(out, .v("i"), .binary(.div, .load(out, .v("i")), .convert(groupSize, .f32)))], work: 1))
            }
            return body
        }
        let red = reducedAxes.map { s[$0] }
        // Each parallel iteration (a kept element) reads its whole group.
        func parallelKept(_ body: ([ScalarExpr]) -> [KernelStmt]) -> [KernelStmt] {
            parallelNest(keptShape, prefix: "o", work: staticWork(red[...]), body: body)
        }
        let outIndex = { (keptIdx: [ScalarExpr]) in flatIndex(keptIdx, keptShape) }
        switch op.op {
        case .argmax:
            return parallelKept { keptIdx in
                [.declare("best", at(keptIdx, red.map { _ in .index(0) })), .declare("arg", .index(0))]
                + loopNest(red, prefix: "r") { r in
                    [.bind("x", at(keptIdx, r)),
                     .when(.binary(.gt, .v("x"), .v("best")), [.assign("best", .v("x")), .assign("arg", r[0])])]
                }
                + [.store(out, outIndex(keptIdx), .convert(.v("arg"), .i32))]
            }
        case .logsumexp:
            return parallelKept { keptIdx in
                [.declare("m", .f32(-.infinity))]
                + loopNest(red, prefix: "r") { r in [.accumulate("m", .max, at(keptIdx, r))] }
                + [.bind("shift", .select(.unary(.isFinite, .v("m")), .v("m"), .f32(0))), .declare("acc", .f32(0))]
                + loopNest(red, prefix: "r") { r in
                    [.accumulate("acc", .add, .unary(.exp, .binary(.sub, at(keptIdx, r), .v("shift"))))]
                }
                + [.store(out, outIndex(keptIdx), .select(.unary(.isFinite, .v("m")),
                                                          .binary(.add, .v("m"), .unary(.log, .v("acc"))), .v("m")))]
            }
        default:
            return parallelKept { keptIdx in
                [.declare("acc", .f32(identity))]
                + loopNest(red, prefix: "r") { r in [.accumulate("acc", combine, at(keptIdx, r))] }
                + [.store(out, outIndex(keptIdx), op.op == .mean ? .binary(.div, .v("acc"), .convert(groupSize, .f32)) : .v("acc"))]
            }
        }
    }

    /// normalize, softmax and their gradients a row at a time (a row: the elements along the
    /// axis), each row on one thread: its statistics in passes over the row, then its elements;
    /// the row stays in cache between the passes. softmax multiplies by 1 / sum (a division
    /// per element cost a third of its kernel). An elementwise chain consuming the result (an
    /// epilogue: attention's mask and scale after softmax_grad) is applied as the last pass
    /// stores each element.
    func rowKernel(_ op: Operation, out: BufferID, epilogue root: Operation? = nil) -> [KernelStmt] {
        let s = type(op.results[0]).shape, a = axis(op, rank: s.count)
        let n = ScalarExpr(s[a]), count = ScalarExpr.convert(ScalarExpr(s[a]), .f32), r = ScalarExpr.v("r")
        func add(_ x: ScalarExpr, _ y: ScalarExpr) -> ScalarExpr { .binary(.add, x, y) }
        func sub(_ x: ScalarExpr, _ y: ScalarExpr) -> ScalarExpr { .binary(.sub, x, y) }
        func mul(_ x: ScalarExpr, _ y: ScalarExpr) -> ScalarExpr { .binary(.mul, x, y) }
        func mean(_ total: String) -> ScalarExpr { .binary(.div, .v(total), count) }
        func pass(_ body: [KernelStmt]) -> KernelStmt { .loop("r", n, body) }
        let kept = s.indices.filter { $0 != a }.map { s[$0] }
        // The element stored last, through the epilogue chain when there is one.
        var finish: (ScalarExpr, [ScalarExpr]) -> ScalarExpr = { value, _ in value }
        if let root = root {
            var lowering = self
            finish = { value, idx in lowering.reading(op.results[0].id, as: .given(value)) { $0.computed(root, idx, space: s) } }
        }
        return parallelNest(kept, prefix: "o", work: 4 * staticWork([s[a]])) { keptIdx in
            var idx = keptIdx
            idx.insert(r, at: a)
            let at = flatIndex(idx, s), x = element(op.operands[0], idx, space: s)
            switch op.op {
            case .softmax:
                return [.declare("largest", .f32(-.infinity)), pass([.accumulate("largest", .max, x)]),
                        .declare("total", .f32(0)), pass([.bind("e", .unary(.exp, sub(x, .v("largest")))), .store(out, at, .v("e")), .accumulate("total", .add, .v("e"))]),
                        .bind("scale", .binary(.div, .f32(1), .v("total"))), pass([.store(out, at, finish(mul(.load(out, at), .v("scale")), idx))])]
            case .softmax_grad:
                let g = element(op.operands[1], idx, space: s)
                return [.declare("total", .f32(0)), pass([.accumulate("total", .add, mul(g, x))]), pass([.store(out, at, finish(mul(x, sub(g, .v("total"))), idx))])]
            default:
                let eps = ScalarExpr.f32(op.attrs["eps"]?.doubleValue ?? 1e-5)
                let y = mul(sub(x, .v("mean")), .v("rstd"))
                let statistics: [KernelStmt] = [
                    .declare("total", .f32(0)), pass([.accumulate("total", .add, x)]), .bind("mean", mean("total")),
                    .declare("squares", .f32(0)), pass([.bind("d", sub(x, .v("mean"))), .accumulate("squares", .add, mul(.v("d"), .v("d")))]),
                    .bind("rstd", .unary(.rsqrt, add(mean("squares"), eps))),
                ]
                guard op.op == .normalize_grad else { return statistics + [pass([.store(out, at, finish(y, idx))])] }
                let g = element(op.operands[1], idx, space: s)
                return statistics + [
                    .declare("gTotal", .f32(0)), .declare("gyTotal", .f32(0)),
                    pass([.bind("g", g), .accumulate("gTotal", .add, .v("g")), .accumulate("gyTotal", .add, mul(.v("g"), y))]),
                    .bind("gMean", mean("gTotal")), .bind("gyMean", mean("gyTotal")),
                    pass([.store(out, at, finish(mul(sub(sub(g, .v("gMean")), mul(y, .v("gyMean"))), .v("rstd")), idx))]),
                ]
            }
        }
    }

    // MARK: matrix products

    /// A matrix operand or result of a GEMM: `shape` (batch axes, then rows and columns) laid out
    /// in `buffer` with `strides`; its rows are contiguous, or its columns when `transposed`.
    struct MatrixView {
        var buffer: BufferID
        var shape: [Dim]
        var strides: [Dim]
        var transposed = false
        /// Elements from one row (column, when transposed) to the next.
        var ld: Dim { strides[strides.count - (transposed ? 1 : 2)] }
        /// Whether the buffer holds the matrices one after another, each row-major or (transposed) column-major.
        var dense: Bool {
            let r = shape.count
            var stored = shape
            if transposed { stored.swapAt(r - 1, r - 2) }
            var expected = denseStrides(stored)
            if transposed { expected.swapAt(r - 1, r - 2) }
            return strides == expected
        }
        /// The element offset of the matrix at batch index `idx` of a product whose batch this one broadcasts to.
        func offset(_ idx: [ScalarExpr]) -> ScalarExpr {
            let batch = shape.count - 2, first = idx.count - batch
            return (0..<batch).reduce(ScalarExpr.index(0)) { e, axis in shape[axis] == 1 ? e : e + idx[first + axis] * ScalarExpr(strides[axis]) }
        }
    }

    /// `transpose(source, perm)` as a view of the source's buffer, when GEMM can read (or write) it
    /// in place: the matrices dense, or their rows or columns contiguous and the other stride a
    /// constant at least their length.
    static func transposedView(_ buffer: BufferID, sourceShape: [Dim], perm: [Int]) -> MatrixView? {
        let denseSource = denseStrides(sourceShape)
        let r = perm.count
        guard r >= 2 else { return nil }
        for transposed in [false, true] {
            let view = MatrixView(buffer: buffer, shape: perm.map { sourceShape[$0] }, strides: perm.map { denseSource[$0] }, transposed: transposed)
            let contiguous = transposed ? r - 2 : r - 1
            guard view.strides[contiguous] == 1 else { continue }
            if view.dense { return view }
            if let ld = view.ld.constant, let length = view.shape[contiguous].constant, ld >= max(1, length) { return view }
        }
        return nil
    }

    /// A matmul operand as its GEMM reads it: its own buffer, or the source of a folded transpose.
    func matrixView(_ v: Value) -> MatrixView {
        if let source = foldedTransposes[v.id], let perm = producers[v.id]?.attrs["perm"]?.ints,
           let view = Self.transposedView(buf(source), sourceShape: type(source).shape, perm: perm) { return view }
        let shape = type(v).shape
        return MatrixView(buffer: buf(v), shape: shape, strides: denseStrides(shape))
    }

    /// A matmul's operands (transposes folded), result and sizes: C[batch][m,n] = A[aBatch][m,k] B[bBatch][k,n].
    struct Product {
        var a, b, c: MatrixView
        var m, n, k: Dim
        var batch: [Dim]
    }

    /// The product `op` computes into `out`, or, when its result is only read transposed, into
    /// that transpose's buffer `out` (`written`: the transpose).
    func product(_ op: Operation, out: BufferID, written transpose: Operation? = nil) -> Product {
        let shape = type(op.results[0]).shape
        let (a, b) = (matrixView(op.operands[0]), matrixView(op.operands[1]))
        let c = transpose.flatMap { t in
            t.attrs["perm"]?.ints.flatMap { perm in Self.transposedView(out, sourceShape: type(t.results[0]).shape, perm: inversePermutation(perm)) }
        } ?? MatrixView(buffer: out, shape: shape, strides: denseStrides(shape))
        return Product(a: a, b: b, c: c, m: shape[shape.count - 2], n: shape[shape.count - 1],
                       k: a.shape[a.shape.count - 1], batch: Array(shape.dropLast(2)))
    }

    /// The GEMM of the batch element at `idx` (operands broadcast), writing (or adding onto) C. A
    /// column-major C is computed as C^T = B^T A^T.
    func gemm(_ p: Product, at idx: [ScalarExpr], accumulate: Bool) -> KernelStmt {
        let (a, b) = p.c.transposed ? (p.b, p.a) : (p.a, p.b)
        let (m, n) = p.c.transposed ? (p.n, p.m) : (p.m, p.n)
        return .gemm(Gemm(a: a.buffer, aOffset: a.offset(idx), transposeA: a.transposed != p.c.transposed,
                          b: b.buffer, bOffset: b.offset(idx), transposeB: b.transposed != p.c.transposed,
                          c: p.c.buffer, cOffset: p.c.offset(idx), m: ScalarExpr(m), n: ScalarExpr(n), k: ScalarExpr(p.k), accumulate: accumulate,
                          lda: ScalarExpr(a.ld), ldb: ScalarExpr(b.ld), ldc: ScalarExpr(p.c.ld)))
    }

    func matmul(_ op: Operation, out: BufferID, written transpose: Operation? = nil) -> [KernelStmt] {
        let p = product(op, out: out, written: transpose)
        // A batch of rows times one matrix (a linear layer on [batch, tokens, features]) is one
        // product with the batch folded into the rows.
        if !p.batch.isEmpty && !p.a.transposed && p.a.dense && p.c.dense && !p.c.transposed && p.a.shape.dropLast(2) == p.batch[...]
            && p.b.shape.dropLast(2).allSatisfy({ $0 == 1 }) {
            var folded = p
            folded.m = p.batch.reduce(p.m, *)
            (folded.batch, folded.a.shape, folded.a.strides) = ([], [folded.m, p.k], denseStrides([folded.m, p.k]))
            (folded.b.shape, folded.b.strides) = (Array(p.b.shape.suffix(2)), Array(p.b.strides.suffix(2)))
            (folded.c.shape, folded.c.strides) = ([folded.m, p.n], denseStrides([folded.m, p.n]))
            return [gemm(folded, at: [], accumulate: false)]
        }
        // A batch of products runs over the pool, each product whole on one thread.
        return parallelNest(p.batch, prefix: "n", work: staticWork([p.m, p.n, p.k][...])) { idx in [gemm(p, at: idx, accumulate: false)] }
    }

    /// The kernel of an elementwise chain that computes its product operand (Fusion.swift). For
    /// a matmul: the bias broadcast into the result, the GEMM accumulating onto it (or writing
    /// it), then the rest of the chain in place, unless the chain was only the bias-add.
    mutating func epilogue(_ root: Operation, _ e: Epilogue, out: BufferID) -> [KernelStmt] {
        switch e.product.op {
        case .conv2d: return convolution(e.product, out: out, epilogue: root)
        case .conv2d_transpose: return transposedConvolution(e.product, out: out, epilogue: root)
        case .maxpool2d_grad, .avgpool2d_grad: return pooling(e.product, out: out) + chainInPlace(root, leaf: e.product.results[0].id, out: out)
        case .normalize, .normalize_grad, .softmax, .softmax_grad: return rowKernel(e.product, out: out, epilogue: root)
        default: break
        }
        let shape = type(root.results[0]).shape
        var body: [KernelStmt] = []
        if let bias = e.bias {
            body += parallelNest(shape) { idx in [.store(out, flatIndex(idx, shape), element(bias, idx, space: shape))] }
        }
        body += matmul(e.product, out: out).map { $0.accumulating(e.bias != nil) }
        guard e.leaf != root.results[0].id else { return body }
        return body + chainInPlace(root, leaf: e.leaf, out: out)
    }

    /// The chain `root` over the whole result, in place: `out` holds the value `leaf`.
    mutating func chainInPlace(_ root: Operation, leaf: Int, out: BufferID) -> [KernelStmt] {
        reading(leaf, as: .inPlace(out)) { $0.elementwiseLoop(root, out: out) }
    }

    /// `body`, lowered while an epilogue chain reads the product `leaf` as `element`.
    mutating func reading<T>(_ leaf: Int, as element: LeafElement, _ body: (Self) -> T) -> T {
        epilogueLeaf = (leaf, element)
        defer { epilogueLeaf = nil }
        return body(self)
    }

    /// The loop computing an elementwise op (and what is fused into it) into `out`: one flat
    /// loop when every read is at the element itself, else a nest over the result's axes.
    func elementwiseLoop(_ op: Operation, out: BufferID) -> [KernelStmt] {
        let shape = type(op.results[0]).shape
        if flatComputable(op, space: shape) {
            return [.parallel("i", ScalarExpr(shape.reduce(Dim(1), *)), [.store(out, .v("i"), computed(op, [], space: shape, flat: .v("i")))], work: 1)]
        }
        return parallelNest(shape) { idx in [.store(out, flatIndex(idx, shape), computed(op, idx, space: shape))] }
    }

    /// concat along axis a: for each index of the axes before a (in parallel), each operand's block
    /// at its offset; an operand read at the element is copied as one run, and an operand
    /// computed inline (an elementwise chain, a slice) is computed there.
    func concatenation(_ op: Operation, out: BufferID) -> [KernelStmt] {
        let shape = type(op.results[0]).shape, a = axis(op, rank: shape.count)
        let outer = Array(shape[..<a]), inner = product(shape[(a + 1)...]), block = product(shape[a...])
        var starts: [Dim] = [], offset = Dim(0)
        for v in op.operands { starts.append(offset); offset = offset + type(v).shape[a] }
        func copy(_ v: Value, at start: Dim, _ o: [ScalarExpr], parallel: Bool) -> [KernelStmt] {
            let part = type(v).shape, base = flatIndex(o, outer)
            if flatReadable(v, space: part) {
                let run = product(part[a...])
                let store = KernelStmt.store(out, base * block + ScalarExpr(start) * inner + .v("j"), element(v, [], space: part, flat: base * run + .v("j")))
                return [parallel ? .parallel("j", run, [store], work: 1) : .loop("j", run, [store])]
            }
            let store = { (idx: [ScalarExpr]) -> [KernelStmt] in
                var target = o + idx
                target[a] = idx[0] + ScalarExpr(start)
                return [.store(out, flatIndex(target, shape), element(v, o + idx, space: part))]
            }
            return parallel ? parallelNest(Array(part[a...]), prefix: "c", body: store) : loopNest(Array(part[a...]), prefix: "c", body: store)
        }
        if a == 0 { return zip(op.operands, starts).flatMap { copy($0, at: $1, [], parallel: true) } }
        return parallelNest(outer, work: staticWork(shape[a...])) { o in zip(op.operands, starts).flatMap { copy($0, at: $1, o, parallel: false) } }
    }

    /// `sum` over the batch axes of a batched matmul (a weight's gradient: the sum over examples
    /// of x[b]^T dy[b]) without the batch of products: when a is stored [batch, k, m] (transposed)
    /// and b [batch, k, n], the batch and k axes are one contraction axis of a single product;
    /// otherwise the products accumulate into the result one by one.
    func summedMatmul(_ op: Operation, out: BufferID) -> [KernelStmt] {
        let p = product(op, out: out), single = MatrixView(buffer: out, shape: [p.m, p.n], strides: denseStrides([p.m, p.n]))
        if p.a.transposed && !p.b.transposed && p.a.dense && p.b.dense && p.a.shape.dropLast(2) == p.batch[...] && p.b.shape.dropLast(2) == p.batch[...] {
            var folded = p
            folded.k = p.batch.reduce(p.k, *)
            (folded.batch, folded.a.shape, folded.a.strides) = ([], [p.m, folded.k], [1, p.m])
            (folded.b.shape, folded.b.strides) = ([folded.k, p.n], denseStrides([folded.k, p.n]))
            folded.c = single
            return [gemm(folded, at: [], accumulate: false)]
        }
        var each = p
        each.c = single
        let zero = KernelStmt.parallel("i", ScalarExpr(p.m * p.n), [.store(out, .v("i"), .f32(0))], work: 1)
        return [zero] + loopNest(p.batch, prefix: "n") { idx in [gemm(each, at: idx, accumulate: true)] }
    }

    // MARK: convolutions and pooling

    /// Whether element (y, x) lies in a height x width plane (window elements in the padding do not).
    func inPlane(_ y: ScalarExpr, _ x: ScalarExpr, height: ScalarExpr, width: ScalarExpr) -> ScalarExpr {
        within(y, height).and(within(x, width))
    }

    /// 0 <= i < size.
    func within(_ i: ScalarExpr, _ size: ScalarExpr) -> ScalarExpr { ScalarExpr.index(0).lt(i + .index(1)).and(i.lt(size)) }

    /// x[source] inside the plane and 0 in the padding; the index is clamped so that no load leaves x.
    func paddedLoad(_ x: BufferID, _ source: ScalarExpr, inside: ScalarExpr) -> ScalarExpr {
        .select(inside, .load(x, .select(inside, source, .index(0))), .f32(0))
    }

    /// For `variable` in 0 ..< `count` along a row whose column in an image `width` wide is
    /// variable + `shift`: binds `variable.lo` and `variable.hi` so that the columns inside the
    /// image are lo ..< hi (an empty run at `count` when `rowInside` is false).
    func imageRun(_ variable: String, count: ScalarExpr, rowInside: ScalarExpr, shift: ScalarExpr, width: ScalarExpr) -> [KernelStmt] {
        [.bind(variable + ".lo", .select(rowInside, .binary(.min, .binary(.max, .index(0) - shift, .index(0)), count), count)),
         .bind(variable + ".hi", .binary(.max, .select(rowInside, .binary(.min, width - shift, count), count), .v(variable + ".lo")))]
    }

    /// `body`, a statement of `variable`, for variable in `start` ..< `end`.
    func run(_ variable: String, from start: ScalarExpr, to end: ScalarExpr, _ body: KernelStmt) -> KernelStmt {
        let offset = variable + ".run"
        return .loop(offset, end - start, [.bind(variable, start + .v(offset)), body])
    }

    /// The innermost loop of an im2col, `variable` in 0 ..< `count` along a row: stores
    /// `cols[index]` = x[`source`], the input at column ix = variable * `step` + `shift`, and 0
    /// where the window leaves the image (`rowInside` false, or ix outside 0 ..< `width`). With
    /// step 1 the columns inside are one contiguous copy between two runs of zeros, which
    /// vectorizes; tested element by element, LLVM loaded 4 lanes one at a time.
    func im2colRow(_ variable: String, count: ScalarExpr, _ cols: BufferID, at index: ScalarExpr, _ x: BufferID, source: ScalarExpr,
                   rowInside: ScalarExpr, step: Int, shift: ScalarExpr, width: ScalarExpr) -> [KernelStmt] {
        guard step == 1 else {
            let inside = rowInside.and(within(ScalarExpr.v(variable) * .index(step) + shift, width))
            return [.loop(variable, count, [.store(cols, index, paddedLoad(x, source, inside: inside))])]
        }
        let (lo, hi) = (ScalarExpr.v(variable + ".lo"), ScalarExpr.v(variable + ".hi"))
        return imageRun(variable, count: count, rowInside: rowInside, shift: shift, width: width) + [
            run(variable, from: .index(0), to: lo, .store(cols, index, .f32(0))),
            run(variable, from: lo, to: hi, .store(cols, index, .load(x, source))),
            run(variable, from: hi, to: count, .store(cols, index, .f32(0))),
        ]
    }

    /// conv2d as im2col and GEMM. An image whose product is large gets its own GEMM, straight
    /// into its output, from columns its part of the images reuses (`imagesInParts`). Small products
    /// (few channels) are grouped, so that OpenBLAS gets few large products: for each group of up to G images,
    /// cols[C*KH*KW, g*OH*OW] holds the receptive fields, prod[O, g*OH*OW] = w[O, C*KH*KW] @ cols,
    /// and prod is copied into the NCHW result. G keeps cols and prod together near 4M floats (16 MB); when the
    /// field size is symbolic (a weight gradient, whose channels are the batch) the group is all images.
    /// When the window is larger than the output (a weight gradient: the window is the output
    /// gradient, the output the kernel), cols is stored transposed, [g*OH*OW, c*KH*KW] for a
    /// chunk of c channels at a time, so that im2col copies whole window rows; the GEMM reads it
    /// transposed.
    /// With an `epilogue` (the elementwise chain consuming the convolution, Fusion.swift), `out`
    /// is the chain's result, computed image by image as the image's products are done.
    mutating func convolution(_ op: Operation, out: BufferID, epilogue root: Operation? = nil) -> [KernelStmt] {
        if let x = foldedTransposes[op.operands[0].id], let dy = foldedTransposes[op.operands[1].id] {
            return weightGradient(op, x: x, dy: dy, out: out)
        }
        let (x, w) = (buf(op.operands[0]), buf(op.operands[1]))
        let xs = type(op.operands[0]).shape, ws = type(op.operands[1]).shape, os = type(op.results[0]).shape
        let stride = ints(op, "stride"), pad = ints(op, "padding"), dil = ints(op, "dilation")
        let (c, h, wd) = (ScalarExpr(xs[1]), ScalarExpr(xs[2]), ScalarExpr(xs[3]))
        let (kh, kw) = (ScalarExpr(ws[2]), ScalarExpr(ws[3]))
        let (oh, ow) = (ScalarExpr(os[2]), ScalarExpr(os[3]))
        let ckk = xs[1] * ws[2] * ws[3], ohw = os[2] * os[3]
        let iy = ScalarExpr.v("y") * .index(stride[0]) - .index(pad[0]) + .v("ki") * .index(dil[0])
        let ix = ScalarExpr.v("x") * .index(stride[1]) - .index(pad[1]) + .v("kj") * .index(dil[1])
        let rowInside = within(iy, h)
        let shift = ScalarExpr.v("kj") * .index(dil[1]) - .index(pad[1])
        let row = (ScalarExpr.v("c") * kh + .v("ki")) * kw + .v("kj")
        let windowRows = (ws[3].constant ?? 0) > (os[3].constant ?? Int.max)
        // A large product per image (at least 64^3 multiply-adds: clear of OpenBLAS's small-matrix
        // path) runs whole on one thread, straight into the image's output: OpenBLAS is faster
        // on one image's columns, which stay in cache, than on a group's.
        if !windowRows, let work = (os[1] * ckk * ohw).constant, work >= 1 << 18 {
            let parts = imageParts(ckk * ohw)
            let cols = scratch("cols", TensorType(.f32, [Dim(parts), ckk, ohw]))
            let mine = ScalarExpr.v("part") * ScalarExpr(ckk * ohw)
            let source = ((ScalarExpr.v("n") * c + .v("c")) * h + iy) * wd + ix
            let own = im2colRow("x", count: ow, cols, at: mine + row * ScalarExpr(ohw) + .v("y") * ow + .v("x"), x, source: source,
                                rowInside: rowInside, step: stride[1], shift: shift, width: wd)
            let im2col = KernelStmt.loop("c", c, [.loop("ki", kh, [.loop("kj", kw, [.loop("y", oh, own)])])])
            let gemm = KernelStmt.gemm(Gemm(a: w, aOffset: .index(0), transposeA: false, b: cols, bOffset: mine, transposeB: false,
                                            c: out, cOffset: .v("n") * ScalarExpr(os[1] * ohw), m: ScalarExpr(os[1]), n: ScalarExpr(ohw), k: ScalarExpr(ckk), accumulate: false))
            let chain = root.map { [imageEpilogue($0, of: op, image: .v("n"), out: out, leaf: .inPlace(out))] } ?? []
            return [imagesInParts(ScalarExpr(xs[0]), parts: parts, each: [im2col, gemm] + chain, work: work)]
        }
        var group = ((ckk + os[1]) * ohw).constant.map { Dim(max(1, (1 << 22) / max(1, $0))) } ?? xs[0]
        if let g = group.constant, let n = xs[0].constant, n < g { group = xs[0] }
        // Window rows (a weight gradient, whose channels are the batch) are im2col'd `chunk`
        // channels at a time, each chunk's product adding into prod, so that the columns stay
        // near 4 MB at any batch (the whole batch at once was 55 MB on ddpm_mnist's last layer).
        let kk = ws[2] * ws[3]
        let chunk = windowRows ? (group * ohw * kk).constant.map { Dim(max(1, (1 << 20) / max(1, $0))) } ?? xs[1] : xs[1]
        let cols = scratch("cols", TensorType(.f32, windowRows ? [group * ohw, chunk * kk] : [ckk, group * ohw]))
        let n = ScalarExpr(xs[0]), g = ScalarExpr(group)
        // Group `grp` covers images first ..< first + count.
        let first = ScalarExpr.v("grp") * g
        let count = ScalarExpr.v("count"), width = ScalarExpr.v("count") * ScalarExpr(ohw)
        let image = first + .v("gi")
        let source = ((image * c + .v("c")) * h + iy) * wd + ix
        let column = ScalarExpr.v("gi") * ScalarExpr(ohw) + .v("y") * ow + .v("x")
        let perImage = (ckk * ohw).constant ?? (1 << 16)
        let product = scratch("prod", TensorType(.f32, [os[1], group * ohw]))
        let products: [KernelStmt]
        if windowRows {
            let (c0, cn) = (ScalarExpr.v("c0"), ScalarExpr.v("cn"))
            let windowRow = im2colRow("kj", count: kw, cols, at: column * ScalarExpr(chunk * kk) + row, x, source: source.substituting("c", with: c0 + .v("c")),
                                      rowInside: rowInside, step: dil[1], shift: ScalarExpr.v("x") * .index(stride[1]) - .index(pad[1]), width: wd)
            let im2col = KernelStmt.parallel("gi", count, [.loop("y", oh, [.loop("x", ow, [.loop("c", cn, [.loop("ki", kh, windowRow)])])])], work: perImage)
            let gemm = KernelStmt.gemm(Gemm(a: w, aOffset: c0 * ScalarExpr(kk), transposeA: false, b: cols, bOffset: .index(0), transposeB: true,
                                            c: product, cOffset: .index(0), m: ScalarExpr(os[1]), n: width, k: cn * ScalarExpr(kk), accumulate: true,
                                            lda: ScalarExpr(ckk), ldb: ScalarExpr(chunk * kk), ldc: width))
            let chunks = (c + ScalarExpr(chunk) - .index(1)) / ScalarExpr(chunk)
            products = [.loop("q", ScalarExpr(os[1]) * width, [.store(product, .v("q"), .f32(0))]),
                        .loop("chunk", chunks, [.bind("c0", .v("chunk") * ScalarExpr(chunk)), .bind("cn", .binary(.min, ScalarExpr(chunk), c - c0)), im2col, gemm])]
        } else {
            let fieldRow = im2colRow("x", count: ow, cols, at: row * width + column, x, source: source, rowInside: rowInside, step: stride[1], shift: shift, width: wd)
            products = [.parallel("gi", count, [.loop("c", c, [.loop("ki", kh, [.loop("kj", kw, [.loop("y", oh, fieldRow)])])])], work: perImage),
                        .gemm(Gemm(a: w, aOffset: .index(0), transposeA: false, b: cols, bOffset: .index(0), transposeB: false,
                                   c: product, cOffset: .index(0), m: ScalarExpr(os[1]), n: width, k: ScalarExpr(ckk), accumulate: false))]
        }
        let copy = root.map { imageEpilogue($0, of: op, image: image, out: out,
                                            leaf: .given(.load(product, ScalarExpr.v("o") * width + .v("gi") * ScalarExpr(ohw) + .v("y") * ow + .v("x")))) }
            ?? .loop("o", ScalarExpr(os[1]), [.loop("p", ScalarExpr(ohw), [
                .store(out, ((image * ScalarExpr(os[1]) + .v("o")) * ScalarExpr(ohw)) + .v("p"), .load(product, ScalarExpr.v("o") * width + .v("gi") * ScalarExpr(ohw) + .v("p"))),
            ])])
        let scatter = KernelStmt.parallel("gi", count, [copy], work: (os[1] * ohw).constant ?? (1 << 16))
        let groups = (n + g - .index(1)) / g
        return [.loop("grp", groups, [.bind("count", .binary(.min, g, n - first))] + products + [scatter])]
    }

    /// The elementwise chain `root` over one image of its convolution `conv` (output position
    /// (o, y, x)), whose value is `leaf`, into `out`.
    mutating func imageEpilogue(_ root: Operation, of conv: Operation, image: ScalarExpr, out: BufferID, leaf: LeafElement) -> KernelStmt {
        let os = type(root.results[0]).shape
        let idx = [image, .v("o"), .v("y"), .v("x")]
        let value = reading(conv.results[0].id, as: leaf) { $0.computed(root, idx, space: os) }
        return .loop("o", ScalarExpr(os[1]), [.loop("y", ScalarExpr(os[2]), [.loop("x", ScalarExpr(os[3]), [.store(out, flatIndex(idx, os), value)])])])
    }

    /// How many parts the images of a convolution run in, each part with its own scratch of
    /// `perImage` floats reused image after image (so it stays in cache): 8, fewer when that
    /// scratch would pass 32 MB. A function of the shape only, so sums over parts do not
    /// depend on the thread count.
    func imageParts(_ perImage: Dim) -> Int {
        guard let floats = perImage.constant else { return 8 }
        return min(8, max(2, (1 << 23) / max(1, floats)))
    }

    /// `each` for every image n ..< images, in `parts` fixed parts run in parallel: part `part`
    /// takes images part*images/parts ..< (part+1)*images/parts in order, after `setup`.
    func imagesInParts(_ images: ScalarExpr, parts: Int, setup: [KernelStmt] = [], each: [KernelStmt], work: Int) -> KernelStmt {
        let count = ScalarExpr.index(parts)
        let first = ScalarExpr.v("part") * images / count, end = (ScalarExpr.v("part") + .index(1)) * images / count
        return .parallel("part", count, setup + [.loop("m", end - first, [.bind("n", first + .v("m"))] + each)], work: work)
    }

    /// A weight gradient, conv2d(transpose(x), transpose(dy)) with both transposes [1, 0, 2, 3]
    /// read in place (Fusion.swift): out[c, o, i, j] = sum over images n and dy positions (ki, kj)
    /// of x[n, c, i*s + ki*d - p, j*s + kj*d - p] * dy[n, o, ki, kj]. Image by image, cols[(c,i,j), (ki,kj)]
    /// gathers x's windows and partial[(c,i,j), o] += cols @ dy[n]^T: one product per image with the
    /// image's data in cache, instead of one long product (k = images x positions) over copies of x
    /// and dy transposed. The images are split into 8 fixed parts, each with its own columns and
    /// partial sum (the parts run in parallel); the result adds the 8 partials in order, so the
    /// thread count does not change it.
    mutating func weightGradient(_ op: Operation, x xv: Value, dy dyv: Value, out: BufferID) -> [KernelStmt] {
        let (x, dy) = (buf(xv), buf(dyv))
        let xs = type(xv).shape, ds = type(dyv).shape, os = type(op.results[0]).shape // [N,C,H,W], [N,O,KH,KW], [C,O,OH,OW]
        let stride = ints(op, "stride"), pad = ints(op, "padding"), dil = ints(op, "dilation")
        let parts = 8, rows = xs[1] * os[2] * os[3], depth = ds[2] * ds[3], outputs = ds[1]
        let cols = scratch("cols", TensorType(.f32, [Dim(parts), rows, depth]))
        let partial = scratch("partial", TensorType(.f32, [Dim(parts), rows, outputs]))
        let (h, wd, kw) = (ScalarExpr(xs[2]), ScalarExpr(xs[3]), ScalarExpr(ds[3]))
        let iy = ScalarExpr.v("i") * .index(stride[0]) - .index(pad[0]) + .v("ki") * .index(dil[0])
        let ix = ScalarExpr.v("j") * .index(stride[1]) - .index(pad[1]) + .v("kj") * .index(dil[1])
        let source = ((ScalarExpr.v("n") * ScalarExpr(xs[1]) + .v("c")) * h + iy) * wd + ix
        let row = (ScalarExpr.v("c") * ScalarExpr(os[2]) + .v("i")) * ScalarExpr(os[3]) + .v("j")
        let myCols = ScalarExpr.v("part") * ScalarExpr(rows * depth), myPartial = ScalarExpr.v("part") * ScalarExpr(rows * outputs)
        let rowInside = within(iy, h)
        let im2col = KernelStmt.loop("c", ScalarExpr(xs[1]), [.loop("i", ScalarExpr(os[2]), [.loop("j", ScalarExpr(os[3]), [
            .loop("ki", ScalarExpr(ds[2]), im2colRow("kj", count: kw, cols, at: myCols + row * ScalarExpr(depth) + .v("ki") * kw + .v("kj"), x, source: source,
                                                     rowInside: rowInside, step: dil[1], shift: ScalarExpr.v("j") * .index(stride[1]) - .index(pad[1]), width: wd)),
        ])])])
        let gemm = KernelStmt.gemm(Gemm(a: cols, aOffset: myCols, transposeA: false, b: dy, bOffset: .v("n") * ScalarExpr(outputs * depth), transposeB: true,
                                        c: partial, cOffset: myPartial, m: ScalarExpr(rows), n: ScalarExpr(outputs), k: ScalarExpr(depth), accumulate: true))
        let perPart = imagesInParts(ScalarExpr(xs[0]), parts: parts, setup: [.loop("q", ScalarExpr(rows * outputs), [.store(partial, myPartial + .v("q"), .f32(0))])],
                                    each: [im2col, gemm], work: (rows * outputs * depth).constant ?? (1 << 16))
        let count = ScalarExpr.index(parts)
        let positions = ScalarExpr(os[2] * os[3])
        let total = KernelStmt.parallel("c", ScalarExpr(xs[1]), [.loop("o", ScalarExpr(outputs), [.loop("ij", positions, [
            .declare("acc", .f32(0)),
            .loop("p", count, [.accumulate("acc", .add, .load(partial, ScalarExpr.v("p") * ScalarExpr(rows * outputs) + (ScalarExpr.v("c") * positions + .v("ij")) * ScalarExpr(outputs) + .v("o")))]),
            .store(out, (ScalarExpr.v("c") * ScalarExpr(outputs) + .v("o")) * positions + .v("ij"), .v("acc")),
        ])])], work: (outputs * os[2] * os[3]).constant.map { $0 * parts } ?? (1 << 16))
        return [perPart, total]
    }

    /// conv2d_transpose as one GEMM per image, cols[O*KH*KW, H*W] = w[C, O*KH*KW]^T @ x[n][C, H*W], then
    /// col2im into the image's (first cleared) output. The images run in parts (`imageParts`) in
    /// parallel, each part with its own columns, each image's GEMM whole on one thread.
    /// With an `epilogue`, the chain runs over each image once its col2im is done.
    mutating func transposedConvolution(_ op: Operation, out: BufferID, epilogue root: Operation? = nil) -> [KernelStmt] {
        let (x, w) = (buf(op.operands[0]), buf(op.operands[1]))
        let xs = type(op.operands[0]).shape, ws = type(op.operands[1]).shape, os = type(op.results[0]).shape
        let stride = ints(op, "stride"), pad = ints(op, "padding")
        let (h, wd) = (ScalarExpr(xs[2]), ScalarExpr(xs[3]))
        let (o, kh, kw) = (ScalarExpr(ws[1]), ScalarExpr(ws[2]), ScalarExpr(ws[3]))
        let (oh, ow) = (ScalarExpr(os[2]), ScalarExpr(os[3]))
        let okk = ws[1] * ws[2] * ws[3], hw = xs[2] * xs[3]
        let parts = imageParts(okk * hw)
        let cols = scratch("cols", TensorType(.f32, [Dim(parts), okk, hw]))
        let oy = ScalarExpr.v("y") * .index(stride[0]) - .index(pad[0]) + .v("ki")
        let ox = ScalarExpr.v("x") * .index(stride[1]) - .index(pad[1]) + .v("kj")
        let inside = inPlane(oy, ox, height: oh, width: ow)
        let target = ((ScalarExpr.v("n") * o + .v("o")) * oh + oy) * ow + ox
        let mine = ScalarExpr.v("part") * ScalarExpr(okk * hw)
        let row = (ScalarExpr.v("o") * kh + .v("ki")) * kw + .v("kj")
        let image = ScalarExpr(os[1] * os[2] * os[3])
        let clear = KernelStmt.loop("q", image, [.store(out, ScalarExpr.v("n") * image + .v("q"), .f32(0))])
        let gemm = KernelStmt.gemm(Gemm(a: w, aOffset: .index(0), transposeA: true, b: x, bOffset: .v("n") * ScalarExpr(xs[1] * hw), transposeB: false,
                                  c: cols, cOffset: mine, m: ScalarExpr(okk), n: ScalarExpr(hw), k: ScalarExpr(xs[1]), accumulate: false))
        // With stride 1 a row's targets inside the output are one contiguous run (which vectorizes).
        let add = KernelStmt.store(out, target, .binary(.add, .load(out, target), .load(cols, mine + row * ScalarExpr(hw) + .v("y") * wd + .v("x"))))
        let addRow: [KernelStmt] = stride[1] == 1
            ? imageRun("x", count: wd, rowInside: within(oy, oh), shift: .v("kj") - .index(pad[1]), width: ow) + [run("x", from: .v("x.lo"), to: .v("x.hi"), add)]
            : [.loop("x", wd, [.when(inside, [add])])]
        let col2im = KernelStmt.loop("o", o, [.loop("ki", kh, [.loop("kj", kw, [.loop("y", h, addRow)])])])
        let chain = root.map { [imageEpilogue($0, of: op, image: .v("n"), out: out, leaf: .inPlace(out))] } ?? []
        return [imagesInParts(ScalarExpr(xs[0]), parts: parts, each: [clear, gemm, col2im] + chain, work: (okk * hw * xs[1]).constant ?? (1 << 16))]
    }

    func pooling(_ op: Operation, out: BufferID) -> [KernelStmt] {
        let x = buf(op.operands[0])
        let xs = type(op.operands[0]).shape
        let kernel = ints(op, "kernel"), stride = ints(op, "stride"), pad = ints(op, "padding")
        let (h, wd) = (ScalarExpr(xs[2]), ScalarExpr(xs[3]))
        let grad = op.op == .maxpool2d_grad || op.op == .avgpool2d_grad
        let ws = grad ? type(op.operands[1]).shape : type(op.results[0]).shape
        let (oh, ow) = (ScalarExpr(ws[2]), ScalarExpr(ws[3]))
        let planes = ScalarExpr(xs[0] * xs[1])
        let iy = ScalarExpr.v("y") * .index(stride[0]) - .index(pad[0]) + .v("ki")
        let ix = ScalarExpr.v("x") * .index(stride[1]) - .index(pad[1]) + .v("kj")
        let inside = inPlane(iy, ix, height: h, width: wd)
        let at = (ScalarExpr.v("p") * h + iy) * wd + ix
        let window = ScalarExpr.index(kernel[0] * kernel[1])
        let windowIndex = (ScalarExpr.v("p") * oh + .v("y")) * ow + .v("x")
        // Pooling unrolls small windows that always lie inside the input (no padding), without bounds
        // tests, so that the loop over a row's outputs is innermost and vectorizes (max_pool2d 2x2 on
        // the cnn benchmark: 1.09 -> 0.31 ms). Gradients with scattered adds keep the window loops
        // (unrolled they ran slower).
        let unrollable = pad.allSatisfy { $0 == 0 } && kernel[0] * kernel[1] <= 16 && (0..<2).allSatisfy { axis in
            guard let input = xs[2 + axis].constant, let windows = ws[2 + axis].constant else { return false }
            return (windows - 1) * stride[axis] + kernel[axis] <= input
        }
        func overWindow(unrolling: Bool, _ body: [KernelStmt]) -> [KernelStmt] {
            guard unrollable && unrolling else { return [.loop("ki", .index(kernel[0]), [.loop("kj", .index(kernel[1]), [.when(inside, body)])])] }
            return (0..<kernel[0]).flatMap { ki in (0..<kernel[1]).flatMap { kj in [.bind("ki", .index(ki)), .bind("kj", .index(kj))] + body } }
        }
        // Each plane p writes only its own outputs (and, for gradients, its own input plane,
        // which it first clears).
        let work = (ws[2] * ws[3]).constant.map { $0 * kernel[0] * kernel[1] } ?? 64
        let zero = KernelStmt.loop("q", h * wd, [.store(out, ScalarExpr.v("p") * h * wd + .v("q"), .f32(0))])
        func overOutputs(clearing: Bool = false, _ body: [KernelStmt]) -> KernelStmt {
            .parallel("p", planes, (clearing ? [zero] : []) + [.loop("y", oh, [.loop("x", ow, body)])], work: work)
        }
        switch op.op {
        case .maxpool2d:
            return [overOutputs([.declare("acc", .f32(-.infinity))] + overWindow(unrolling: true, [.accumulate("acc", .max, .load(x, at))]) + [.store(out, windowIndex, .v("acc"))])]
        case .avgpool2d:
            return [overOutputs([.declare("acc", .f32(0))] + overWindow(unrolling: true, [.accumulate("acc", .add, .load(x, at))])
                                + [.store(out, windowIndex, .binary(.div, .v("acc"), .convert(window, .f32)))])]
        case .maxpool2d_grad:
            let g = buf(op.operands[1])
            if unrollable && stride == kernel {
                // Windows that tile the input: each element belongs to one window, which finds the
                // position of its first maximum and stores the gradient there and 0 elsewhere, without
                // branches or scattered adds (and without clearing where the windows cover the input):
                // 1.41 -> 0.62 ms on the cnn benchmark.
                let covers = xs[2] == ws[2] * Dim(kernel[0]) && xs[3] == ws[3] * Dim(kernel[1])
                let positions = (0..<kernel[0]).flatMap { ki in (0..<kernel[1]).map { kj in (ki, kj) } }
                var body: [KernelStmt] = [.declare("best", .f32(-.infinity)), .declare("arg", .constant(-1, .f32))]
                for (k, (ki, kj)) in positions.enumerated() {
                    body += [.bind("ki", .index(ki)), .bind("kj", .index(kj)), .bind("v\(k)", .load(x, at)), .bind("better", .binary(.gt, .v("v\(k)"), .v("best"))),
                             .assign("arg", .select(.v("better"), .constant(Double(k), .f32), .v("arg"))), .assign("best", .select(.v("better"), .v("v\(k)"), .v("best")))]
                }
                body.append(.bind("share", .load(g, windowIndex)))
                for (k, (ki, kj)) in positions.enumerated() {
                    body += [.bind("ki", .index(ki)), .bind("kj", .index(kj)),
                             .store(out, at, .select(.binary(.eq, .v("arg"), .constant(Double(k), .f32)), .v("share"), .f32(0)))]
                }
                return [overOutputs(clearing: !covers, body)]
            }
            return [overOutputs(clearing: true, [.declare("best", .f32(-.infinity)), .declare("arg", .index(-1))]
                + overWindow(unrolling: false, [.bind("v", .load(x, at)), .when(.binary(.gt, .v("v"), .v("best")), [.assign("best", .v("v")), .assign("arg", at)])])
                + [.when(ScalarExpr.index(0).lt(.v("arg") + .index(1)), [.store(out, .v("arg"), .binary(.add, .load(out, .v("arg")), .load(g, windowIndex)))])])]
        default:
            let g = buf(op.operands[1])
            return [overOutputs(clearing: true, [.bind("share", .binary(.div, .load(g, windowIndex), .convert(window, .f32)))]
                + overWindow(unrolling: false, [.store(out, at, .binary(.add, .load(out, at), .v("share")))]))]
        }
    }

    // MARK: random numbers

    func random(_ op: Operation, out: BufferID, count: ScalarExpr) -> [KernelStmt] {
        let key = ScalarExpr.load(buf(op.operands[0]), .index(0))
        let stream = ScalarExpr.index(op.attrs["stream"]?.intValue ?? 0)
        func uniform(_ i: ScalarExpr) -> ScalarExpr { .call(.rngUniform, [key, stream, i]) }
        let f64 = { (x: Double) in ScalarExpr.constant(x, .f64) }
        switch op.op {
        case .random_uniform:
            let lo = op.attrs["low"]?.doubleValue ?? 0, hi = op.attrs["high"]?.doubleValue ?? 1
            return [.loop("i", count, [.store(out, .v("i"), .convert(.binary(.add, f64(lo), .binary(.mul, f64(hi - lo), uniform(.v("i")))), .f32))])]
        case .random_normal:
            return [.loop("i", count, [.store(out, .v("i"), .convert(.call(.rngNormal, [key, stream, .v("i")]), .f32))])]
        case .random_randint:
            let lo = op.attrs["low"]?.intValue ?? 0, span = max(1, (op.attrs["high"]?.intValue ?? 1) &- lo)
            return [.loop("i", count, [.store(out, .v("i"), .convert(.index(lo) + .call(.rngBelow, [key, stream, .v("i"), .index(span)]), .i32))])]
        case .random_bernoulli:
            let p = buf(op.operands[1])
            return [.loop("i", count, [.store(out, .v("i"), .select(.binary(.lt, uniform(.v("i")), .convert(.load(p, .v("i")), .f64)), .f32(1), .f32(0)))])]
        default:
            let logits = buf(op.operands[1])
            let classes = ScalarExpr(type(op.operands[1]).shape.last ?? 1)
            let at = ScalarExpr.v("i") * classes + .v("c")
            return [.loop("i", count, [
                .declare("best", f64(-.infinity)), .declare("arg", .index(0)),
                .loop("c", classes, [
                    .bind("score", .binary(.sub, .convert(.load(logits, at), .f64),
                                           .unary(.log, .unary(.neg, .unary(.log, .binary(.add, uniform(at), f64(0x1p-25))))))),
                    .when(.binary(.gt, .v("score"), .v("best")), [.assign("best", .v("score")), .assign("arg", .v("c"))]),
                ]),
                .store(out, .v("i"), .convert(.v("arg"), .i32)),
            ])]
        }
    }
}

extension KernelStmt {
    /// The statement with its GEMMs adding onto their output (beta 1) when `accumulate`.
    func accumulating(_ accumulate: Bool) -> KernelStmt {
        switch self {
        case .gemm(var g):
            g.accumulate = g.accumulate || accumulate
            return .gemm(g)
        case .loop(let v, let n, let body): return .loop(v, n, body.map { $0.accumulating(accumulate) })
        case .parallel(let v, let n, let body, let work): return .parallel(v, n, body.map { $0.accumulating(accumulate) }, work: work)
        default: return self
        }
    }
}
