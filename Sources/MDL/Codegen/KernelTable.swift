/// The distinct kernels of a program, each defined once under the name of its first
/// occurrence: kernels whose text is the same with buffers numbered by parameter position (the
/// layers of a deep model, a step and its `grad.` twin) share one function.
final class KernelTable {
    /// A kernel to define, with the buffers and size symbols of the entry function it came from.
    struct Entry {
        let kernel: Kernel
        let buffers: [BufferInfo]
        let symbols: [String]
        /// The length of its text: what its optimization and code generation cost, roughly.
        let cost: Int
    }

    private(set) var entries: [Entry] = []
    private var names: [String: String] = [:]

    /// The symbol that computes `k`, a kernel of the function with these buffers and symbols.
    func symbol(for k: Kernel, buffers: [BufferInfo], symbols: [String]) -> String {
        let position = Dictionary(uniqueKeysWithValues: k.buffers.enumerated().map { ($1, $0) })
        let key = symbols.joined(separator: ",") + "|" + k.buffers.map { buffers[$0.id].dtype.rawValue }.joined(separator: ",") + "|"
            + KernelPrinter().body(k.body, "", { "$\(position[$0]!)" })
        if let name = names[key] { return name }
        names[key] = k.name
        entries.append(Entry(kernel: k, buffers: buffers, symbols: symbols, cost: key.utf8.count))
        return k.name
    }

    /// The kernels in at most `count` groups of about equal cost, for modules compiled in
    /// parallel: the costliest first, each into the group with the least so far.
    /// Each group keeps the program's order.
    func groups(_ count: Int) -> [[Entry]] {
        var load = [Int](repeating: 0, count: max(1, min(count, entries.count)))
        var group = [Int](repeating: 0, count: entries.count)
        for i in entries.indices.sorted(by: { entries[$0].cost > entries[$1].cost }) {
            group[i] = load.indices.min { load[$0] < load[$1] }!
            load[group[i]] += entries[i].cost
        }
        return load.indices.map { g in entries.indices.filter { group[$0] == g }.map { entries[$0] } }
    }
}
