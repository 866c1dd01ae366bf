/// Dead-code elimination: removes ops with no effects whose results nothing uses, also inside
/// loop bodies. Loops, state writes and terminators are effects and stay.
enum DeadCodeElimination {
    static func run(_ m: Module, _ diags: DiagnosticEngine) -> Module {
        for f in m.functions { sweep(&f.body) }
        return m
    }

    /// Removes dead ops from a block, given the values its successors use; returns the values it uses.
    @discardableResult
    private static func sweep(_ block: inout Block, usedAfter: Set<Int> = []) -> Set<Int> {
        var used = usedAfter
        var kept: [Operation] = []
        for var op in block.operations.reversed() {
            let live = op.op.hasEffects || op.results.contains { used.contains($0.id) }
            guard live else { continue }
            for i in op.regions.indices { used.formUnion(sweep(&op.regions[i])) }
            for x in op.operands { used.insert(x.id) }
            kept.append(op)
        }
        block.operations = kept.reversed()
        return used
    }
}
