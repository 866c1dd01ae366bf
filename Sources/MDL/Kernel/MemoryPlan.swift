/// Memory planning: which temporaries live in the arena and when each is live. Every
/// temporary that is allocated and freed within the function (all but its results) gets an
/// interval of step positions, from its `alloc` to its `free`, counting the steps of nested
/// loop bodies once: a body's temporaries are freed inside the body, and whatever lives across
/// a loop covers all of it, so intervals that do not meet never hold values at the same time.
/// The offsets come at run time from the runtime's `mdl_arena_layout`, once per set of sizes;
/// `layout` calls the same function at compile time (`mdlc build --stats`, the tests).
import MDLRuntime

struct ArenaPlan {
    /// The arena's buffers, and each one's first and last step position.
    var buffers: [BufferID]
    var live: [(first: Int, last: Int)]
    /// Each arena buffer's position in `buffers`.
    var index: [BufferID: Int]

    init(_ f: EntryFunction) {
        var first: [BufferID: Int] = [:], last: [BufferID: Int] = [:]
        var position = 0
        func walk(_ steps: [Step]) {
            for step in steps {
                position += 1
                switch step {
                case .alloc(let b): first[b] = position
                case .free(let b): last[b] = position
                case .loop(_, _, _, let body), .sequence(let body): walk(body)
                case .kernel, .copy: break
                }
            }
        }
        walk(f.steps)
        let temporaries = first.keys.filter { last[$0] != nil && f.info($0).role == .temporary }.sorted { $0.id < $1.id }
        self.init(buffers: temporaries, live: temporaries.map { (first[$0]!, last[$0]!) })
    }

    init(buffers: [BufferID], live: [(first: Int, last: Int)]) {
        self.buffers = buffers
        self.live = live
        index = Dictionary(uniqueKeysWithValues: buffers.enumerated().map { ($1, $0) })
    }

    /// Byte sizes of the arena's buffers when the symbolic sizes take the values `env`.
    func sizes(_ f: EntryFunction, _ env: [String: Int]) -> [Int] {
        buffers.map { b in (f.info(b).count.evaluate(env) ?? 0) * (f.info(b).dtype == .bool ? 1 : 4) }
    }

    /// The runtime's layout for these sizes: each buffer's byte offset and the arena's size.
    func layout(sizes: [Int]) -> (offsets: [Int], total: Int) {
        let intervals = live.flatMap { [Int64($0.first), Int64($0.last)] }
        let bytes = sizes.map(Int64.init)
        var offsets = [Int64](repeating: 0, count: buffers.count)
        let total = mdl_arena_layout(Int64(buffers.count), intervals, bytes, &offsets)
        return (offsets.map(Int.init), Int(total))
    }
}
