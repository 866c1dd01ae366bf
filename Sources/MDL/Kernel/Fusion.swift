/// Fusion, decided while lowering: an elementwise op whose only use is an elementwise op,
/// a reduction or a broadcast in the same block is not computed into a buffer of its own;
/// its consumer's kernel computes it inline, element by element. Filled constants, iotas and
/// broadcasts cost nothing to recompute, so they are inlined into every such consumer.
/// Chains like `(x - m) * rsqrt(v + eps) * gamma + beta` or `exp(x - max)` summed become one
/// kernel, one pass over memory. A matmul whose only use sums its batch axes (a weight's
/// gradient) is computed by the sum's kernel, without the batch of products. A matmul whose
/// only use is an elementwise chain of its shape (bias-add, activation) is computed by the
/// chain's kernel: the GEMM writes the kernel's result, which starts as the bias when the
/// chain begins with an add (the GEMM accumulates onto it, so the add costs no pass), and
/// the rest of the chain runs over the result in place. A convolution's chain runs image by
/// image right after the image's GEMM, while its output is in cache; a pooling gradient's
/// chain (a ReLU's gradient) runs over its result in the same kernel; a row kernel's chain
/// (normalize, softmax and their gradients) as it stores each element.
extension FunctionLowering {
    static let elementwiseOps: Set<OpKind> = OpKind.unary.union(OpKind.binary).union([.select, .cast])
    /// Ops whose kernels read their operands through `element`, so they can absorb producers.
    static let fusingConsumers: Set<OpKind> = elementwiseOps.union([.broadcast, .slice, .pad, .concat, .sum, .mean, .reduce_max, .reduce_min, .logsumexp, .argmax, .normalize, .normalize_grad, .softmax, .softmax_grad])
    /// Elementwise ops that cost far more than a load (polynomials, divisions).
    static let transcendentalOps: Set<OpKind> = [.exp, .log, .erf, .gelu, .tanh, .sigmoid, .silu, .softplus, .sin, .cos, .pow]
    /// Whether `op` reads each element of its operand at an index computed from its own: a slice,
    /// a pad without interior padding (out of the window it is the pad value), or a reshape that
    /// only adds or drops axes of size 1 (`x[:, t]`, a slice and such a reshape).
    func indexRemap(_ op: Operation) -> Bool {
        switch op.op {
        case .slice: return true
        case .pad: return (op.attrs["interior"]?.ints ?? []).allSatisfy { $0 == 0 }
        case .reshape: return type(op.results[0]).shape.filter { $0 != 1 } == type(op.operands[0]).shape.filter { $0 != 1 }
        default: return false
        }
    }
    /// Whether `op`'s kernel reads its operands through `element`, so that it can absorb their producers.
    func fusingConsumer(_ op: Operation) -> Bool { Self.fusingConsumers.contains(op.op) || (op.op == .reshape && indexRemap(op)) }
    /// Matrix products and convolutions: GEMMs.
    static let products: Set<OpKind> = [.matmul, .conv2d, .conv2d_transpose]
    /// Ops whose kernels can run the elementwise chain consuming their result (an epilogue): the
    /// row kernels apply it as they store a row's elements.
    static let epilogueProducts: Set<OpKind> = products.union([.maxpool2d_grad, .avgpool2d_grad, .normalize, .normalize_grad, .softmax, .softmax_grad])

    /// Decides which values get no kernel of their own: transposes used only by matrix products
    /// (folded into the GEMM flags and strides), batched matrix products read only transposed
    /// (written in the transposed layout by the transpose's kernel), the transposes around a
    /// weight gradient's convolution (read in place) and fused values (computed inline).
    /// Nested loop bodies are planned on their own: nothing fuses across a block boundary.
    mutating func planKernels(_ body: Block) {
        var users: [Int: [(op: Operation, block: Int)]] = [:]
        // Where each op's result is defined: how many products (matmuls, convolutions) precede it in its block.
        var productsBefore: [Int: Int] = [:]
        var blockCount = 0
        func scan(_ b: Block) {
            let id = blockCount
            blockCount += 1
            var products = 0
            for op in b.operations {
                for v in op.operands { users[v.id, default: []].append((op, id)) }
                if let r = op.results.first { productsBefore[r.id] = products }
                if Self.products.contains(op.op) { products += 1 }
                op.regions.forEach(scan)
            }
        }
        scan(body)
        // Transcendental math placed before a product that precedes its consumer was placed there
        // on purpose (a derivative autodiff computes in the forward pass, while its input is in
        // cache): fusing would move that work across the product, so it keeps a kernel.
        func productBetween(_ producer: Operation, _ consumer: Operation) -> Bool {
            guard let p = producer.results.first, let c = consumer.results.first else { return false }
            return productsBefore[c.id, default: 0] > productsBefore[p.id, default: 0] + (Self.products.contains(producer.op) ? 1 : 0)
        }
        var costly: [Int: Bool] = [:]
        func transcendental(_ op: Operation) -> Bool {
            guard let r = op.results.first else { return false }
            if let known = costly[r.id] { return known }
            let found = Self.transcendentalOps.contains(op.op)
                || op.operands.contains { fused.contains($0.id) && producers[$0.id].map(transcendental) == true }
            costly[r.id] = found
            return found
        }
        // A product of batches of matrices on both sides (attention's): one GEMM per matrix pair,
        // which can read and write matrices anywhere (rows some stride apart), unlike the single
        // GEMM of a linear layer or of a summed weight gradient.
        func batchOfProducts(_ product: Operation) -> Bool {
            let only = users[product.results[0].id] ?? []
            let summed = only.count == 1 && only[0].op.op == .sum && sumsBatchAxes(only[0].op, of: product)
            return !summed && !type(product.operands[1]).shape.dropLast(2).allSatisfy { $0 == 1 }
        }
        // A transpose of the last two axes is a GEMM flag; one that moves batch axes too (a head split) is
        // read in place by a batch of products, unless B would be read transposed (OpenBLAS's small
        // products are slower that way than a copy: docs/DESIGN-NOTES.md).
        func readsInPlace(_ user: Operation, transpose: Operation) -> Bool {
            guard user.op == .matmul, let perm = transpose.attrs["perm"]?.ints else { return false }
            if perm == Array(0..<(perm.count - 2)) + [perm.count - 1, perm.count - 2] { return true }
            guard batchOfProducts(user),
                  let view = Self.transposedView(BufferID(id: -1), sourceShape: type(transpose.operands[0]).shape, perm: perm) else { return false }
            return !view.transposed || user.operands[1] != transpose.results[0]
        }
        blockCount = 0
        var blockOf: [Int: Int] = [:]
        func visit(_ b: Block) {
            let id = blockCount
            blockCount += 1
            for op in b.operations {
                defer { op.regions.forEach(visit) }
                guard op.results.count == 1 else { continue }
                producers[op.results[0].id] = op
                blockOf[op.results[0].id] = id
                guard fusion else { continue }
                let u = users[op.results[0].id] ?? []
                if op.op == .transpose, let perm = op.attrs["perm"]?.ints, perm.count >= 2 {
                    if !u.isEmpty, u.allSatisfy({ readsInPlace($0.op, transpose: op) }) {
                        foldedTransposes[op.results[0].id] = op.operands[0]
                        continue
                    }
                    if let product = producers[op.operands[0].id], product.op == .matmul, blockOf[product.results[0].id] == id,
                       users[product.results[0].id]?.count == 1, batchOfProducts(product),
                       Self.transposedView(BufferID(id: -1), sourceShape: type(op.results[0]).shape, perm: inversePermutation(perm)) != nil {
                        transposedProducts[op.results[0].id] = product
                        fused.insert(product.results[0].id)
                        continue
                    }
                }
                // A weight gradient, conv2d(transpose(x), transpose(dy)): computed image by image from
                // x and dy themselves when each image's product is large.
                if op.op == .conv2d, let work = weightGradientWork(op), work >= 1 << 18 {
                    let transposes = op.operands.compactMap { producers[$0.id] }.filter {
                        $0.op == .transpose && $0.attrs["perm"]?.ints == [1, 0, 2, 3] && users[$0.results[0].id]?.count == 1 && blockOf[$0.results[0].id] == id
                    }
                    if transposes.count == 2 { for t in transposes { foldedTransposes[t.results[0].id] = t.operands[0] } }
                }
                if op.op == .sum, let p = producers[op.operands[0].id], p.op == .matmul, blockOf[p.results[0].id] == id,
                   (users[p.results[0].id] ?? []).count == 1, sumsBatchAxes(op, of: p) {
                    summedProducts.insert(op.results[0].id)
                    fused.insert(p.results[0].id)
                }
                guard !u.isEmpty, u.allSatisfy({ fusingConsumer($0.op) && $0.block == id }) else { continue }
                let free = (op.op == .constant && op.attrs["value"]?.doubleValue != nil) || op.op == .iota || op.op == .broadcast
                // A slice or pad is an index into its operand's buffer: free to inline into each consumer,
                // unless its operand is computed inline too (each consumer would compute it again). A
                // reshape of a buffer stays a view of it; one of a value computed inline passes it on.
                let inlineOperand = op.operands.first.map { fused.contains($0.id) } ?? false
                let remap = indexRemap(op) && (op.op == .reshape ? inlineOperand && u.count == 1 : u.count == 1 || !inlineOperand)
                if free || remap || (Self.elementwiseOps.contains(op.op) && u.count == 1 && !(productBetween(op, u[0].op) && transcendental(op))) {
                    fused.insert(op.results[0].id)
                }
            }
        }
        visit(body)
        guard fusion else { return }
        // Epilogues: from a single-use product (matmul, convolution but not a weight gradient read
        // in place, pooling gradient) up its chain of fused single-use elementwise ops of the same
        // shape to the chain's kernel.
        // (One per kernel: of two products added together, the first in program order is the bias of the second.)
        let products = producers.sorted(by: { $0.key < $1.key }).filter { id, op in
            Self.epilogueProducts.contains(op.op) && !(op.op == .conv2d && foldedTransposes[op.operands[0].id] != nil)
                && !fused.contains(id) && type(op.results[0]).dtype == .f32
        }
        for (id, product) in products {
            let shape = type(product.results[0]).shape
            guard let first = users[id], first.count == 1, var root = Optional(first[0].op), Self.elementwiseOps.contains(root.op),
                  blockOf[root.results[0].id] == blockOf[id], type(root.results[0]).shape == shape else { continue }
            let user = root
            while fused.contains(root.results[0].id), let next = users[root.results[0].id], next.count == 1,
                  Self.elementwiseOps.contains(next[0].op.op), type(next[0].op.results[0]).shape == shape { root = next[0].op }
            guard !fused.contains(root.results[0].id), epilogues[root.results[0].id] == nil, type(root.results[0]).dtype == .f32 else { continue }
            let bias = product.op == .matmul && user.op == .add && user.operands.count == 2 && user.operands[0] != user.operands[1]
                ? user.operands[user.operands[0].id == id ? 1 : 0] : nil
            fused.insert(id)
            epilogues[root.results[0].id] = Epilogue(product: product, bias: bias, leaf: bias == nil ? id : user.results[0].id)
        }
    }

    /// The multiply-adds of one image of a weight gradient, conv2d(transpose(x), transpose(dy)),
    /// computed image by image: (channels x kernel positions) x outputs x (dy positions).
    func weightGradientWork(_ conv: Operation) -> Int? {
        let xs = type(conv.operands[0]).shape, ws = type(conv.operands[1]).shape, os = type(conv.results[0]).shape
        return (xs[0] * os[2] * os[3] * ws[0] * ws[2] * ws[3]).constant
    }

    /// Whether `sum` adds up exactly the batch axes of the matmul `product`.
    func sumsBatchAxes(_ sum: Operation, of product: Operation) -> Bool {
        let rank = type(product.results[0]).rank
        return rank > 2 && Set(normalizedAxes(ints(sum, "axes"), rank: rank)) == Set(0..<(rank - 2))
    }

    /// The element of `v` at index `idx` of an iteration space `space` that `v`'s shape
    /// broadcasts to (right-aligned). With `flat`, the space is walked by one flat index
    /// and every buffer read has the space's shape or a single element (see `flatReadable`).
    func element(_ v: Value, _ idx: [ScalarExpr], space: [Dim], flat: ScalarExpr? = nil) -> ScalarExpr {
        if let leaf = epilogueLeaf, leaf.value == v.id {
            switch leaf.element {
            case .inPlace(let b): return .load(b, flat ?? flatIndex(idx, space))
            case .given(let e): return e
            }
        }
        guard fused.contains(v.id), let op = producers[v.id] else {
            let shape = type(v).shape
            if let flat { return .load(buf(v), shape == space ? flat : .index(0)) }
            return .load(buf(v), broadcastIndex(idx, operand: shape))
        }
        return computed(op, idx, space: space, flat: flat)
    }

    /// The element of an elementwise op's (or broadcast's, iota's, filled constant's) result, from its operands' elements.
    func computed(_ op: Operation, _ idx: [ScalarExpr], space: [Dim], flat: ScalarExpr? = nil) -> ScalarExpr {
        let v = op.results[0], shape = type(v).shape
        switch op.op {
        case .constant: return .constant(op.attrs["value"]?.doubleValue ?? 0, ScalarType(type(v).dtype))
        case .broadcast: return element(op.operands[0], idx, space: space, flat: flat)
        case .iota:
            let axis = self.axis(op, rank: shape.count)
            return shape[axis] == 1 ? .constant(0, .i32) : .convert(idx[idx.count - shape.count + axis], .i32)
        case .slice, .pad, .reshape:
            // The result's own index (the space's trailing axes; 0 where it is broadcast), mapped into the operand.
            let at = shape.indices.map { shape[$0] == 1 ? ScalarExpr.index(0) : idx[idx.count - shape.count + $0] }
            let source = type(op.operands[0]).shape
            if op.op == .reshape {
                var kept = at.indices.filter { shape[$0] != 1 }.map { at[$0] }[...]
                return element(op.operands[0], source.map { $0 == 1 ? .index(0) : kept.removeFirst() }, space: source)
            }
            if op.op == .slice {
                let starts = dims(op, "starts"), steps = ints(op, "strides")
                return element(op.operands[0], at.indices.map { ScalarExpr(starts[$0]) + at[$0] * .index(steps[$0]) }, space: source)
            }
            let low = dims(op, "low"), high = dims(op, "high")
            let from = at.indices.map { at[$0] - ScalarExpr(low[$0]) }
            let padded = at.indices.filter { low[$0] != 0 || high[$0] != 0 }
            let inside = padded.map { ScalarExpr.index(0).lt(from[$0] + .index(1)).and(from[$0].lt(ScalarExpr(source[$0]))) }
                .reduce(nil) { (all: ScalarExpr?, ok) in all.map { $0.and(ok) } ?? ok }
            guard let inside else { return element(op.operands[0], from, space: source) }
            // Outside the window the padded axes' indices are clamped, so that no load leaves the operand.
            let value = element(op.operands[0], from.indices.map { padded.contains($0) ? .select(inside, from[$0], .index(0)) : from[$0] }, space: source)
            return .select(inside, value, .constant(op.attrs["value"]?.doubleValue ?? 0, ScalarType(type(v).dtype)))
        default: return Self.elementwise(op, op.operands.map { element($0, idx, space: space, flat: flat) })
        }
    }

    /// Whether `element(v, ...)` over `space` can use one flat index: every buffer it reads
    /// has the space's shape or one element, and no iota needs per-axis indices.
    func flatReadable(_ v: Value, space: [Dim]) -> Bool {
        if let leaf = epilogueLeaf, leaf.value == v.id { return true }
        guard fused.contains(v.id), let op = producers[v.id] else {
            let shape = type(v).shape
            return shape == space || shape.allSatisfy { $0 == 1 }
        }
        return flatComputable(op, space: space)
    }

    func flatComputable(_ op: Operation, space: [Dim]) -> Bool {
        switch op.op {
        case .constant: return true
        case .iota, .slice, .pad, .reshape: return false
        default: return op.operands.allSatisfy { flatReadable($0, space: space) }
        }
    }

    /// The Graph IR ops computed by the kernel of `op`: it and the producers fused into it.
    func fusedOps(_ op: Operation) -> [OpKind] {
        var out = [op.op]
        for v in op.operands where fused.contains(v.id) { if let p = producers[v.id] { out += fusedOps(p) } }
        return out
    }
}

extension ScalarExpr {
    /// The buffers an expression reads.
    var buffers: [BufferID] {
        switch self {
        case .load(let b, let i): return [b] + i.buffers
        case .unary(_, let x), .convert(let x, _), .table(_, _, let x): return x.buffers
        case .binary(_, let a, let b): return a.buffers + b.buffers
        case .select(let c, let a, let b): return c.buffers + a.buffers + b.buffers
        case .call(_, let args): return args.flatMap(\.buffers)
        case .index, .constant, .size, .variable: return []
        }
    }
}

extension KernelStmt {
    /// The buffers a statement reads or writes.
    var buffersTouched: [BufferID] {
        switch self {
        case .loop(_, let n, let body), .parallel(_, let n, let body, _): return n.buffers + body.flatMap(\.buffersTouched)
        case .store(let b, let i, let v): return [b] + i.buffers + v.buffers
        case .bind(_, let e), .declare(_, let e), .assign(_, let e), .accumulate(_, _, let e): return e.buffers
        case .when(let c, let body): return c.buffers + body.flatMap(\.buffersTouched)
        case .fail(let c, _, _): return c.buffers
        case .gemm(let g): return [g.c, g.a, g.b]
        }
    }
}
