import XCTest
@testable import MDL

/// The arena (Kernel/MemoryPlan.swift, Runtime/arena.c): every temporary of every model's
/// functions is used only inside its live interval, and the layout never gives two buffers
/// that are live at the same time overlapping bytes, for several assignments of the sizes.
final class MemoryPlanTests: XCTestCase {
    /// Checks a layout: buffers whose intervals meet are disjoint; the arena holds every buffer
    /// and is at least as large as the bytes live at any one step.
    func checkLayout(_ live: [(first: Int, last: Int)], _ sizes: [Int], _ offsets: [Int], _ total: Int, _ what: String) {
        let aligned = sizes.map { ($0 + 63) / 64 * 64 }
        for i in live.indices where aligned[i] > 0 {
            XCTAssert(offsets[i] % 64 == 0 && offsets[i] >= 0 && offsets[i] + aligned[i] <= total, "\(what): buffer \(i) outside the arena")
            for j in live.indices where j > i && aligned[j] > 0 && live[i].first <= live[j].last && live[j].first <= live[i].last {
                let disjoint = offsets[i] + aligned[i] <= offsets[j] || offsets[j] + aligned[j] <= offsets[i]
                if !disjoint {
                    XCTFail("\(what): buffers \(i) and \(j) are live together (steps \(live[i]) and \(live[j])) and overlap")
                    return
                }
            }
        }
        let lastStep = live.map(\.last).max() ?? 0
        var busiest = 0
        for step in 0...lastStep {
            busiest = max(busiest, live.indices.filter { live[$0].first <= step && step <= live[$0].last }.reduce(0) { $0 + aligned[$1] })
        }
        XCTAssertGreaterThanOrEqual(total, busiest, what)
    }

    /// `mdlc build --stats` names the buffers live where the largest arena is busiest: the
    /// largest first, each with the kernel that writes it; together no more than the arena.
    func testStatsNameTheBuffersLiveWhereTheArenaIsBusiest() throws {
        var report = Driver.BuildReport()
        _ = try Driver.lower(path: Repo.models.appendingPathComponent("cnn_mnist.mdl").path, report: &report)
        let arena = report.arena
        XCTAssertEqual(arena.function, "step0")
        let bytes = arena.busiest.map(\.bytes)
        XCTAssertGreaterThanOrEqual(bytes.count, 3)
        XCTAssertEqual(bytes, bytes.sorted(by: >))
        XCTAssertLessThanOrEqual(bytes.reduce(0, +), arena.bytes)
        // At batch 128 the first convolution's output, f32[B,32,26,26], is 11 MB.
        XCTAssertGreaterThanOrEqual(bytes[0], 128 * 32 * 26 * 26 * 4)
        for b in arena.busiest {
            XCTAssertTrue(b.type.hasPrefix("f32[") || b.type.hasPrefix("bool[") || b.type.hasPrefix("i32["), b.type)
            XCTAssertTrue(b.writer.hasPrefix("step0.k") || b.writer.hasPrefix("copy of "), b.writer)
        }
    }

    func testModelsTemporariesStayInTheirIntervalsAndNeverOverlap() throws {
        var checked = 0
        for url in Repo.modelFiles {
            let c = Driver.compile(path: url.path, stopAfter: "dce")
            guard let m = c.module else { XCTFail("\(url.lastPathComponent): \(c.diagnostics.render())"); continue }
            let program = try Lowering.run(m)
            for f in program.functions {
                let plan = ArenaPlan(f)
                let what = "\(url.lastPathComponent) @\(f.name)"
                // Every use of an arena buffer lies in its interval (positions as ArenaPlan counts them).
                var position = 0
                func walk(_ steps: [Step]) {
                    for step in steps {
                        position += 1
                        var used: [BufferID] = []
                        switch step {
                        case .kernel(let k, _): used = k.buffers
                        case .copy(let to, let from): used = [to, from]
                        case .loop(let index, let low, let high, let body):
                            used = [index, low, high]
                            walk(body)
                        case .sequence(let body): walk(body)
                        case .alloc(let b):
                            // Only results (handed to the caller) are allocated per call; every other temporary is in the arena.
                            XCTAssert(plan.index[b] != nil || f.outputs.contains(b), "\(what): \(f.info(b).name) is allocated outside the arena")
                        case .free: break
                        }
                        for b in used { if let i = plan.index[b] { XCTAssert(plan.live[i].first < position && position < plan.live[i].last, "\(what): \(f.info(b).name) used outside its interval") } }
                    }
                }
                walk(f.steps)
                // Results are handed to the caller, so they are never in the arena.
                for b in f.outputs { XCTAssertNil(plan.index[b], "\(what): a result is in the arena") }
                for env in [3, 64].map({ v in Dictionary(uniqueKeysWithValues: f.symbols.enumerated().map { ($1, v + $0) }) }) {
                    let sizes = plan.sizes(f, env)
                    let (offsets, total) = plan.layout(sizes: sizes)
                    checkLayout(plan.live, sizes, offsets, total, "\(what) \(env)")
                    checked += plan.buffers.count
                }
            }
        }
        XCTAssertGreaterThan(checked, 10_000)
    }

    /// The layout on random intervals and sizes (including empty buffers and equal sizes).
    func testRandomIntervalsNeverOverlap() {
        var rng = RobustnessTests.SplitMix(state: 5)
        for round in 0..<50 {
            let n = Int.random(in: 1...120, using: &rng)
            let live: [(first: Int, last: Int)] = (0..<n).map { _ in
                let a = Int.random(in: 0..<200, using: &rng)
                return (a, a + Int.random(in: 1..<60, using: &rng))
            }
            let sizes = (0..<n).map { _ in [0, 4, 64, 100, 4096, Int.random(in: 1..<100_000, using: &rng)][Int.random(in: 0..<6, using: &rng)] }
            let plan = ArenaPlan(buffers: (0..<n).map { BufferID(id: $0) }, live: live)
            let (offsets, total) = plan.layout(sizes: sizes)
            checkLayout(live, sizes, offsets, total, "round \(round)")
        }
    }
}
