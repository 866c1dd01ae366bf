/// Merging state updates: after the in-place writes (InPlace.swift), an optimizer step is a
/// few flat kernels per parameter: the moments (written into their globals), then the
/// parameter, which reads the new moments at the element it writes. A flat kernel that only
/// writes globals moves down into a later flat kernel over the same elements when nothing in
/// between touches what it writes or writes what it reads, and the two kernels exchange values
/// only at the element being computed: one pass computes m, v and the parameter (Adam reads the
/// gradient and the moments once, and every parameter's update is one kernel, shared by up to
/// 4 parameters of the same size).
extension FunctionLowering {
    /// At most this many stores in one merged loop (4 Adam updates): each store is a stream read
    /// and written, besides the gradients, and past a few dozen streams the cores' prefetchers
    /// lose track (gpt's 16 attention weights in one loop: 1.9 ns per element; in loops of 4:
    /// 1.0 ns; Adam 0.93-1.03 -> 0.65-0.66 ms per step; 6 to 24 stores measured alike).
    static let mergedStores = 12

    func mergeStateUpdates(_ steps: inout [Step]) {
        var b = steps.count - 1
        while b > 0 {
            defer { b -= 1 }
            guard case .kernel(var later, let op) = steps[b], var laterLoop = FlatLoop(later) else { continue }
            var a = b - 1
            var merged = false
            while a >= 0 {
                defer { a -= 1 }
                guard case .kernel(let earlier, _) = steps[a], let earlierLoop = FlatLoop(earlier), earlierLoop.extent == laterLoop.extent,
                      earlierLoop.written.allSatisfy({ buffers[$0.id].role.isGlobal }) else { continue }
                let between = steps[(a + 1)..<b]
                guard between.allSatisfy({ s in s.buffersUsed.allSatisfy { !earlierLoop.written.contains($0) } && s.buffersWritten.allSatisfy { !earlierLoop.read.contains($0) } }),
                      laterLoop.readsOnlyAtTheElement(earlierLoop.written), earlierLoop.readsOnlyAtTheElement(laterLoop.written) else { continue }
                if laterLoop.body.count + earlierLoop.body.count > Self.mergedStores { break }
                later = later.merging(earlier)
                laterLoop = FlatLoop(later)!  // what the next candidate is checked against includes what just merged
                merged = true
                steps.remove(at: a)
                b -= 1
            }
            if merged { steps[b] = .kernel(later, sourceOp: op) }
        }
    }
}

extension Kernel {
    /// This flat kernel with the flat kernel `earlier` (over the same elements) in its loop,
    /// `earlier`'s stores first; named `<name>.mergedN` for the N kernels it holds.
    func merging(_ earlier: Kernel) -> Kernel {
        let loop = FlatLoop(self)!
        var merged = self
        merged.body = [.parallel(loop.variable, loop.extent, FlatLoop(earlier)!.stores(as: loop.variable) + loop.body, work: 1)]
        for x in earlier.buffers where !merged.buffers.contains(x) { merged.buffers.append(x) }
        func split(_ name: String) -> (base: String, count: Int) {
            guard let r = name.range(of: ".merged", options: .backwards), let k = Int(name[r.upperBound...]) else { return (name, 1) }
            return (String(name[..<r.lowerBound]), k)
        }
        let (base, count) = split(name)
        merged.name = "\(base).merged\(count + split(earlier.name).count)"
        return merged
    }
}

/// A kernel that is one parallel loop over flat elements storing at the loop index.
struct FlatLoop {
    let variable: String
    let extent: ScalarExpr
    let body: [KernelStmt]

    init?(_ k: Kernel) {
        guard k.body.count == 1, case .parallel(let v, let n, let body, work: 1) = k.body[0],
              body.allSatisfy({ if case .store(_, .variable(v), _) = $0 { return true }; return false }) else { return nil }
        variable = v
        extent = n
        self.body = body
    }

    var written: [BufferID] { body.compactMap { if case .store(let b, _, _) = $0 { return b }; return nil } }
    var read: [BufferID] { body.flatMap { if case .store(_, _, let x) = $0 { return x.buffers }; return [] } }

    /// Whether every load of `buffers` is at the loop's own element.
    func readsOnlyAtTheElement(_ buffers: [BufferID]) -> Bool {
        body.allSatisfy { s in
            guard case .store(_, _, let x) = s else { return false }
            return buffers.allSatisfy { b in x.loadIndices(of: b).allSatisfy { if case .variable(variable) = $0 { return true }; return false } }
        }
    }

    /// The stores with the loop variable renamed.
    func stores(as name: String) -> [KernelStmt] {
        body.map { s in
            guard case .store(let b, _, let x) = s else { return s }
            return .store(b, .variable(name), x.substituting(variable, with: .variable(name)))
        }
    }
}

extension BufferRole {
    var isGlobal: Bool { if case .global = self { return true }; return false }
}

extension Step {
    /// The buffers a step may write (a loop: everything it uses).
    var buffersWritten: [BufferID] {
        switch self {
        case .alloc(let b): return [b]
        case .free: return []
        case .copy(let to, _): return [to]
        case .kernel(let k, _): return k.body.flatMap(\.buffersStored)
        case .loop, .sequence: return buffersUsed
        }
    }
}

extension KernelStmt {
    /// The buffers a statement stores to (a GEMM: its output).
    var buffersStored: [BufferID] {
        switch self {
        case .store(let b, _, _): return [b]
        case .gemm(let g): return [g.c]
        case .loop(_, _, let body), .parallel(_, _, let body, _), .when(_, let body): return body.flatMap(\.buffersStored)
        case .bind, .declare, .assign, .accumulate, .fail: return []
        }
    }
}

extension ScalarExpr {
    /// The expression with a variable replaced.
    func substituting(_ name: String, with e: ScalarExpr) -> ScalarExpr {
        if case .variable(name) = self { return e }
        return mappingChildren { $0.substituting(name, with: e) }
    }
}
