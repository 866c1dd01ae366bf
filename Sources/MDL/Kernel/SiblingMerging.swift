/// Merging siblings: a flat kernel and the flat kernel right before it, over the same elements,
/// that read a common buffer become one loop: the buffer is read once, and math both compute
/// from it is computed once (LLVM finds the common subexpressions in the one loop body). GELU
/// and its derivative, both computed from the pre-activation in the forward pass, are one kernel.
extension FunctionLowering {
    /// At most this many stores in one merged loop (each is a stream written).
    static let siblingStores = 4

    /// `<later>.mergedN`, N the kernels merged so far (a name's `.mergedK` counts K of them).
    static func mergedName(_ later: String, with earlier: String) -> String {
        func split(_ name: String) -> (base: String, count: Int) {
            guard let r = name.range(of: ".merged", options: .backwards), let k = Int(name[r.upperBound...]) else { return (name, 1) }
            return (String(name[..<r.lowerBound]), k)
        }
        let (base, count) = split(later)
        return "\(base).merged\(count + split(earlier).count)"
    }

    func mergeSiblings(_ steps: inout [Step]) {
        var b = 1
        while b < steps.count {
            defer { b += 1 }
            guard case .kernel(var later, let op) = steps[b], let laterLoop = FlatLoop(later),
                  !laterLoop.written.contains(where: { buffers[$0.id].role.isGlobal }) else { continue }
            var a = b - 1
            while a > 0, case .alloc = steps[a] { a -= 1 }  // buffers allocated after `earlier` are not its
            guard case .kernel(let earlier, _) = steps[a], let earlierLoop = FlatLoop(earlier), earlierLoop.extent == laterLoop.extent,
                  !earlierLoop.written.contains(where: { buffers[$0.id].role.isGlobal }),
                  !Set(earlierLoop.read).isDisjoint(with: laterLoop.read),
                  earlierLoop.body.count + laterLoop.body.count <= Self.siblingStores,
                  laterLoop.readsOnlyAtTheElement(earlierLoop.written), earlierLoop.readsOnlyAtTheElement(laterLoop.written) else { continue }
            later.body = [.parallel(laterLoop.variable, laterLoop.extent, earlierLoop.stores(as: laterLoop.variable) + laterLoop.body, work: 1)]
            for x in earlier.buffers where !later.buffers.contains(x) { later.buffers.append(x) }
            later.name = Self.mergedName(later.name, with: earlier.name)
            steps[b] = .kernel(later, sourceOp: op)
            steps.remove(at: a)
            b -= 1
        }
    }
}
