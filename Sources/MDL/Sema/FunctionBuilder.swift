/// The function being built: where new operations go (loop bodies nest), the cache of
/// global loads per nesting level, and the random key.
final class FunctionBuilder {
    let function: Function
    let training: Bool
    private var blocks: [[Operation]] = [[]]
    private var globalCache: [[String: Value]] = [[:]]
    private var keys: [Value?] = [nil]
    private var loopIndices: [Value] = []

    init(function: Function, training: Bool) {
        self.function = function
        self.training = training
    }

    var inLoop: Bool { blocks.count > 1 }
    func append(_ op: Operation) { blocks[blocks.count - 1].append(op) }
    func cachedGlobal(_ name: String) -> Value? {
        for level in globalCache.reversed() { if let v = level[name] { return v } }
        return nil
    }
    func cacheGlobal(_ name: String, _ v: Value) { globalCache[globalCache.count - 1][name] = v }

    func beginLoopBody(index: Value) {
        blocks.append([])
        globalCache.append([:])
        keys.append(nil)
        loopIndices.append(index)
    }
    func endLoopBody() -> [Operation] {
        globalCache.removeLast()
        keys.removeLast()
        loopIndices.removeLast()
        return blocks.removeLast()
    }

    /// The random key at the current nesting level: the function's key argument, folded with
    /// each enclosing loop index so every iteration draws fresh numbers.
    func key() -> Value { key(level: keys.count - 1) }

    private func key(level: Int) -> Value {
        if let k = keys[level] { return k }
        if level == 0 {
            let k = function.newValue(TensorType(.i32, []), name: "key")
            function.body.arguments.append(k)
            keys[0] = k
            return k
        }
        let outer = key(level: level - 1)
        let k = function.newValue(TensorType(.i32, []))
        append(Operation(op: .rng_fold, operands: [outer, loopIndices[level - 1]], results: [k], attrs: [:]))
        // Only the current level may cache: the fold sits in the innermost block.
        if level == keys.count - 1 { keys[level] = k }
        return k
    }

    func finish(results: [Value]) {
        append(Operation(op: .return, operands: results, results: [], attrs: [:]))
        function.body.operations = blocks[0]
    }
}
