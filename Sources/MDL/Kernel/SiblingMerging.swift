/// Merging siblings: a flat kernel and the flat kernel right before it, over the same elements,
/// that read a common buffer become one loop: the buffer is read once, and math both compute
/// from it is computed once (LLVM finds the common subexpressions in the one loop body). GELU
/// and its derivative, both computed from the pre-activation in the forward pass, are one kernel.
extension FunctionLowering {
    /// At most this many stores in one merged loop (each is a stream written).
    static let siblingStores = 4

    func mergeSiblings(_ steps: inout [Step]) {
        var b = 1
        while b < steps.count {
            defer { b += 1 }
            guard case .kernel(let later, let op) = steps[b], let laterLoop = FlatLoop(later),
                  !laterLoop.written.contains(where: { buffers[$0.id].role.isGlobal }) else { continue }
            var a = b - 1
            while a > 0, case .alloc = steps[a] { a -= 1 }  // buffers allocated after `earlier` are not its
            guard case .kernel(let earlier, _) = steps[a], let earlierLoop = FlatLoop(earlier), earlierLoop.extent == laterLoop.extent,
                  !earlierLoop.written.contains(where: { buffers[$0.id].role.isGlobal }),
                  !Set(earlierLoop.read).isDisjoint(with: laterLoop.read),
                  earlierLoop.body.count + laterLoop.body.count <= Self.siblingStores,
                  laterLoop.readsOnlyAtTheElement(earlierLoop.written), earlierLoop.readsOnlyAtTheElement(laterLoop.written) else { continue }
            steps[b] = .kernel(later.merging(earlier), sourceOp: op)
            steps.remove(at: a)
            b -= 1
        }
    }
}
