import CLLVM
import Foundation
import XCTest
@testable import MDL

/// A program compiled in-process: lowered, emitted and JIT-compiled, called through the
/// entry-function ABI of docs/RUNTIME.md exactly as the runtime calls it.
final class JITProgram {
    typealias Entry = @convention(c) (UnsafeMutablePointer<UnsafeMutableRawPointer?>?, UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
                                      UnsafePointer<Int64>?, UnsafeMutablePointer<UnsafeMutableRawPointer?>?, UnsafeMutablePointer<Int64>?, Int32) -> Int32
    let module: Module
    let program: KernelProgram
    let jit: JIT
    var globals: [String: Tensor]

    /// `fusion` and `optimize` false: one kernel per op, compiled without `default<O3>`.
    init(module m: Module, seed: Int32 = 0, fusion: Bool = true, optimize: Bool = true) throws {
        module = m
        program = try Lowering.run(m, fusion: fusion)
        jit = try JIT(optimized: optimize)
        let (kernels, entries) = try Driver.generate(program, hash: 0, context: jit.llvmContext, withMain: false,
                                                     target: try HostTarget(), quickTarget: try HostTarget(optimized: false), optimize: optimize)
        try jit.add(kernels)
        try jit.add(entries)
        globals = Interpreter(module: m, seed: seed).globals
    }

    struct CallError: Error, CustomStringConvertible { let description: String }

    /// Runs an entry function on inputs (float64 tensors converted to their dtype); returns its outputs.
    /// Globals are read from and written back to `globals`.
    func run(_ name: String, _ inputs: [Tensor], key: Int32 = 0) throws -> [Tensor] {
        guard let index = program.functions.firstIndex(where: { $0.name == name }) else { throw CallError(description: "no @\(name)") }
        let f = program.functions[index]
        let address = try jit.address(of: "mdl_fn_\(index)")
        let entry = unsafeBitCast(UnsafeRawPointer(bitPattern: UInt(address))!, to: Entry.self)
        func raw(_ t: Tensor, _ dtype: DType) -> UnsafeMutableRawPointer {
            let width = dtype == .bool ? 1 : 4
            let p = UnsafeMutableRawPointer.allocate(byteCount: max(64, t.data.count * width), alignment: 64)
            for (i, v) in t.data.enumerated() {
                switch dtype {
                case .f32: p.storeBytes(of: Float(v), toByteOffset: 4 * i, as: Float.self)
                case .i32: p.storeBytes(of: Int32(v), toByteOffset: 4 * i, as: Int32.self)
                case .bool: p.storeBytes(of: v != 0 ? 1 : 0, toByteOffset: i, as: UInt8.self)
                }
            }
            return p
        }
        func tensor(_ p: UnsafeRawPointer, _ dtype: DType, _ shape: [Int]) -> Tensor {
            let n = shape.reduce(1, *)
            let data: [Double] = (0..<n).map { i in
                switch dtype {
                case .f32: return Double(p.load(fromByteOffset: 4 * i, as: Float.self))
                case .i32: return Double(p.load(fromByteOffset: 4 * i, as: Int32.self))
                case .bool: return Double(p.load(fromByteOffset: i, as: UInt8.self))
                }
            }
            return Tensor(dtype, shape, data)
        }
        var globalPointers: [UnsafeMutableRawPointer?] = module.globals.map { raw(globals[$0.name]!, $0.type.dtype) }
        var inData: [UnsafeMutableRawPointer?] = zip(inputs, f.inputs).map { raw($0, f.info($1).dtype) }
        var inShapes = [Int64](repeating: 0, count: max(1, inputs.count) * 8)
        for (i, t) in inputs.enumerated() { for (a, d) in t.shape.enumerated() { inShapes[i * 8 + a] = Int64(d) } }
        var outData = [UnsafeMutableRawPointer?](repeating: nil, count: max(1, f.outputs.count))
        var outShapes = [Int64](repeating: 0, count: max(1, f.outputs.count) * 8)
        // The outputs are the function's own blocks (read before its next call).
        defer { for p in globalPointers + inData { p?.deallocate() } }
        let status = entry(&globalPointers, &inData, inShapes, &outData, &outShapes, key)
        guard status == 0 else { throw CallError(description: "@\(name) returned \(status)") }
        for (g, p) in zip(module.globals, globalPointers) { globals[g.name] = tensor(p!, g.type.dtype, globals[g.name]!.shape) }
        return f.outputTypes.enumerated().map { j, type in
            tensor(outData[j]!, type.dtype, (0..<type.rank).map { Int(outShapes[j * 8 + $0]) })
        }
    }
}

/// Generated code against the reference interpreter on random inputs: every op, at sizes
/// that are and are not multiples of the vector width, every broadcasting pattern and the
/// attribute cases; and the code generator's own properties (vectorization, the host CPU).
final class CodegenTests: XCTestCase {
    /// Compiles `source` (mdl, procedures `p...`) and compares every procedure with the
    /// interpreter on random inputs (sizes N bound to each of `sizes`). `tolerance` is relative
    /// to max(1, |reference|): float32 against float64.
    func check(_ source: String, sizes: [Int] = [1, 3, 17, 33, 1000], tolerance: Double = 2e-6, range: ClosedRange<Double> = -3...3,
               file: StaticString = #filePath, line: UInt = #line) throws {
        guard let m = compileOK("import std.nn\n" + source, stopAfter: "dce", file: file, line: line) else { return }
        let jit = try JITProgram(module: m)
        var rng = RobustnessTests.SplitMix(state: 11)
        for f in m.functions where f.kind == .proc {
            for n in sizes {
                let inputs: [Tensor] = f.arguments.filter { f.names[$0.id] != "key" }.map { a in
                    let type = f.type(of: a)
                    let shape = type.shape.map { $0.evaluate(["N": n, "M": 3]) ?? 1 }
                    let count = shape.reduce(1, *)
                    switch type.dtype {
                    case .f32: return Tensor(.f32, shape, (0..<count).map { _ in Double(Float(Double.random(in: range, using: &rng))) })
                    case .i32: return Tensor(.i32, shape, (0..<count).map { _ in Double(Int.random(in: 0..<3, using: &rng)) })
                    case .bool: return Tensor(.bool, shape, (0..<count).map { _ in Double(Int.random(in: 0...1, using: &rng)) })
                    }
                }
                let got = try jit.run(f.name, inputs, key: 7)
                let want = try Interpreter(module: m).run(f.name, inputs, key: 7)
                for (g, w) in zip(got, want) {
                    XCTAssertEqual(g.shape, w.shape, "\(f.name) n=\(n): shape", file: file, line: line)
                    for k in w.data.indices where !(abs(g.data[k] - w.data[k]) <= tolerance * max(1, abs(w.data[k])) || (g.data[k].isNaN && w.data[k].isNaN)) {
                        XCTFail("\(source)\n@\(f.name) n=\(n) element \(k) of \(w.count): generated \(g.data[k]), interpreter \(w.data[k])", file: file, line: line)
                        break
                    }
                }
            }
        }
    }

    func testUnaryOps() throws {
        let ops = ["exp", "tanh", "sigmoid", "relu", "gelu", "silu", "softplus", "sin", "cos", "erf", "abs", "floor", "sign"]
        try check(ops.enumerated().map { "proc p\($0)(x: f32[N]) { \($1)(x) }" }.joined(separator: "\n") + "\nproc pneg(x: f32[N]) { -x }")
        try check("proc p(x: f32[N]) { log(x) }\nproc q(x: f32[N]) { sqrt(x) }\nproc r(x: f32[N]) { rsqrt(x) }", range: 0.05...5)
        try check("proc p(x: i32[N]) { abs(x - 1) + sign(x - 1) }\nproc q(x: bool[N]) { !x }")
    }

    /// exp is generated inline (a polynomial, so that loops vectorize): within 2 ulp of libm's
    /// expf over its whole range, subnormal results included, and exact on the special values.
    func testInlineExpMatchesLibm() throws {
        guard let m = compileOK("proc e(x: f32[N]) { exp(x) }", stopAfter: "dce") else { return }
        let jit = try JITProgram(module: m)
        var inputs: [Float] = [.nan, .infinity, -.infinity, 0, -0.0, 88.72, 88.73, 89, 1000, -87.3, -100, -103.9, -104, -1000, 1e-8, -1e-8]
        var rng = RobustnessTests.SplitMix(state: 3)
        inputs += (0..<20000).map { _ in Float(Double.random(in: -104...89, using: &rng)) }
        let got = try jit.run("e", [Tensor(.f32, [inputs.count], inputs.map(Double.init))])[0].data
        for (x, g) in zip(inputs, got) {
            let want = Foundation.exp(x), value = Float(g)
            if want.isNaN { XCTAssert(value.isNaN, "exp(\(x)) = \(value)"); continue }
            let ulps = abs(Double(value.bitPattern) - Double(want.bitPattern))
            XCTAssert(ulps <= 2, "exp(\(x)): generated \(value), libm \(want) (\(ulps) ulp)")
        }
    }

    /// tanh is generated inline (a rational function, so that loops vectorize): within 5 ulp of
    /// libm's tanhf on [-10, 10], tiny values and the special values included. 5 ulp is the worst
    /// over every float in [-10, 10] (at -7.08271885, checked here), found by running the same
    /// float operations in C over all of them.
    func testInlineTanhMatchesLibm() throws {
        guard let m = compileOK("proc t(x: f32[N]) { tanh(x) }", stopAfter: "dce") else { return }
        let jit = try JITProgram(module: m)
        var inputs: [Float] = [.nan, .infinity, -.infinity, 0, -0.0, 7.9, 7.91, 9, 100, -7.9, -100, 1e-30, -1e-8, 3.9e-4, 4.1e-4, .leastNonzeroMagnitude, -7.08271885]
        var rng = RobustnessTests.SplitMix(state: 5)
        inputs += (0..<20000).map { _ in Float(Double.random(in: -10...10, using: &rng)) }
        inputs += (0..<2000).map { _ in Float(Double.random(in: -0.01...0.01, using: &rng)) }
        let got = try jit.run("t", [Tensor(.f32, [inputs.count], inputs.map(Double.init))])[0].data
        var worst = 0.0
        for (x, g) in zip(inputs, got) {
            let want = Foundation.tanh(x), value = Float(g)
            if want.isNaN { XCTAssert(value.isNaN, "tanh(\(x)) = \(value)"); continue }
            let ulps = abs(Double(value.bitPattern) - Double(want.bitPattern))
            worst = max(worst, ulps)
            XCTAssert(ulps <= 5, "tanh(\(x)): generated \(value), libm \(want) (\(ulps) ulp)")
        }
        print("inline tanh: worst \(worst) ulp from libm")
    }

    func testBinaryOpsWithEveryBroadcastingPattern() throws {
        var procs: [String] = []
        for (i, op) in ["+", "-", "*"].enumerated() {
            procs += ["proc a\(i)(a: f32[N], b: f32[N]) { a \(op) b }", "proc b\(i)(a: f32[N], s: f32) { a \(op) s }",
                      "proc c\(i)(a: f32[M, 1, N], b: f32[4, 1]) { a \(op) b }", "proc d\(i)(a: f32[1, N], b: f32[M, 1]) { a \(op) b }"]
        }
        procs += ["proc e(a: f32[N], b: f32[N]) { a / (b * b + 0.5) }", "proc f(a: f32[N], b: f32[N]) { maximum(a, b) - minimum(a, b) * 2.0 }",
                  "proc g(a: f32[N], b: f32[M, N]) { where(a > b, a, b) + f32(a <= b) + f32(a == b) + f32(a != b) + f32(a >= b) + f32(a < b) }",
                  "proc h(a: bool[N], b: bool[N]) { f32(a && b) + 2.0 * f32(a || b) }",
                  "proc i(a: i32[N], b: i32[N]) { (a * 7 - 5) / (b - 1) + (a * 7 - 5) % (b - 1) + maximum(a, b) }"]
        try check(procs.joined(separator: "\n"))
        try check("proc p(a: f32[N], b: f32[N]) { pow(a * a + 0.1, b) }\nproc q(a: f32[N], b: f32[N]) { a % (b * b + 1.0) }", tolerance: 1e-5)
    }

    func testCastsConstantsAndIndices() throws {
        try check("""
        proc a(x: f32[N]) { i32(x * 3.0) }
        proc b(x: i32[N]) { f32(x) * 0.5 + f32(bool(x)) }
        proc c(x: f32[N]) { x + f32(arange(N)) }
        proc d(x: f32[N]) { x * [1.0, 2.0, 3.0][1] + f32(N) }
        proc e(x: f32[M, N]) { reshape(f32(arange(M)), [M, 1]) * x + full([M, N], 2.5) }
        """)
    }

    func testReductionsOverEveryAxisPattern() throws {
        var procs: [String] = [], merged: [String] = [], rows: [String] = []
        for (i, r) in ["sum", "mean", "max", "min", "logsumexp"].enumerated() {
            procs += ["proc a\(i)(x: f32[N]) { \(r)(x) }", "proc b\(i)(x: f32[M, N]) { \(r)(x, axis = 0) }",
                      "proc c\(i)(x: f32[M, N]) { \(r)(x, axis = -1, keepdims = true) }", "proc d\(i)(x: f32[M, N, 2]) { \(r)(x, axis = [0, 2]) }",
                      "proc e\(i)(x: f32[2, N, M]) { \(r)(x, axis = 1) }"]
            // adjacent reduced (or kept) axes read as one, unless an operand broadcasts
            merged += ["proc p\(i)(x: f32[M, 2, N, 3]) { \(r)(x * 2.0, axis = [2, 3]) }", "proc q\(i)(x: f32[2, 3, M, N]) { \(r)(x, axis = [0, 1]) }",
                       "proc s\(i)(x: f32[M, 2, N], y: f32[N]) { \(r)(x * y, axis = [0, 1]) }"]
            // reduced rows: in parts of at least 256 rows (N = 1000: 3 parts, 2000 rows: 7), 8 rows per
            // update, then the rest; columns in blocks of 512 (600: two); with a kept leading axis
            // (u), 8 rows per update of the output in blocks of 64 columns (70: two)
            rows += ["proc r\(i)(x: f32[N, 70]) { \(r)(x, axis = 0) }", "proc t\(i)(x: f32[2, N, 70]) { \(r)(x - 1.0, axis = [0, 1]) }",
                     "proc w\(i)(x: f32[N, 600]) { \(r)(x, axis = 0) }", "proc u\(i)(x: f32[2, N, 70]) { \(r)(x, axis = 1) }"]
        }
        procs += ["proc f(x: f32[M, N]) { argmax(x, axis = -1) }", "proc g(x: f32[M, N]) { argmax(x, axis = 0, keepdims = true) }",
                  "proc h(x: f32[M, N]) { argmin(x, axis = 1) }",
                  "proc i(x: f32[M, N]) { cumsum(x, axis = 0) }", "proc j(x: f32[M, N]) { cumsum(x) }", "proc k(x: i32[M, N]) { cumsum(x, axis = 1) }"]
        try check(procs.joined(separator: "\n"), tolerance: 1e-5)
        try check(merged.joined(separator: "\n"), tolerance: 1e-5)
        // Float32 sums of up to 2000 elements of [-3, 3].
        try check(rows.joined(separator: "\n"), tolerance: 5e-5)
    }

    func testShapeOps() throws {
        try check("""
        proc a(x: f32[M, N]) { transpose(x, [1, 0]) }
        proc b(x: f32[2, M, N]) { transpose(x, [2, 0, 1]) + 0.0 }
        proc t(x: f32[2, M, N, 3]) { transpose(x, [1, 0, 2, 3]) }
        proc u(x: f32[M, 2, N, 3]) { transpose(x, [2, 3, 0, 1]) }
        proc c(x: f32[N, M]) { reshape(x, [M, N]) * 2.0 }
        proc d(x: f32[N]) { broadcast_to(x, [3, N]) }
        proc e(x: f32[N, 6]) { x[1:, 1:5:2] }
        proc f(x: f32[M, N], y: f32[2, N]) { concat([x, y, x], axis = 0) }
        proc g(x: f32[N, M], y: f32[N, 2]) { concat([y, x], axis = 1) }
        proc h(x: f32[M, N]) { pad(x, [[1, 2], [0, 3]], value = -1.5) }
        proc i(x: f32[2, N, 5]) { stack([x, x], axis = 1) }
        """)
    }

    /// Slices and pads computed inline by their consumers (elementwise ops, broadcasts,
    /// reductions, row kernels, concatenations), concatenations computing their operands, and
    /// sums of zero pads whose windows meet rewritten as concatenations (AlgebraicSimplification).
    func testFusedSlicesPadsAndConcatenations() throws {
        try check("""
        proc a(x: f32[N, 6]) { sigmoid(x[:, 1:4]) * x[:, 0:3] }
        proc b(x: f32[N, 5], y: f32[N, 3]) { x[:, 2:3] * y + x[:, ::2] }
        proc c(x: f32[N, 4], y: f32[N, 7]) { (exp(pad(x, [[0, 0], [1, 2]])) + y, pad(x, [[0, 0], [2, 1]], value = -1.5) * y) }
        proc d(x: f32[N, 4], y: f32[N, 3]) { concat([exp(x), y * 2.0, x[:, 0:2]], axis = 1) }
        proc e(x: f32[N, 4], y: f32[2, 4]) { concat([exp(x), y, pad(y, [[1, 0], [0, 0]])], axis = 0) }
        proc f(x: f32[N, 4], y: f32[N, 3]) { (pad(x, [[0, 0], [0, 3]]) + pad(y, [[0, 0], [4, 0]]), pad(x, [[0, 0], [1, 5]]) + pad(y, [[0, 0], [5, 2]])) }
        proc g(x: f32[N, 4], y: f32[N, 3], z: f32[N, 2]) { pad(z, [[0, 0], [7, 0]]) + pad(y, [[0, 0], [4, 2]]) + pad(x, [[0, 0], [0, 5]]) }
        proc h(x: f32[N, 6]) {
          let e = exp(x)
          (e[:, 1:], e[:, :2] * 2.0)
        }
        proc i(x: f32[N, 6]) { (sum(x[:, 1:5], axis = 1), softmax(x[:, 2:], axis = 1), x[1:, :] - x[:-1, :]) }
        proc j(x: f32[2, N, 3]) { concat([x[:, :, 1:], exp(x)], axis = 2) }
        proc k(x: f32[N, 4, 3]) { exp(x[:, 2]) * x[:, 0] + reshape(x[:, 1:2, :], [N, 3]) }
        proc l(x: f32[N, 4], w: f32[4, 2]) { (reshape(exp(x), [N, 1, 4]) @ w, reshape(x[:, 1:3], [N, 2, 1])) }
        """, tolerance: 1e-5)
    }

    func testGatherScatterUpdateOneHot() throws {
        try check("""
        proc a(x: f32[4, N], idx: i32[M]) { take(x, idx, axis = 0) }
        proc b(x: f32[N, 4], idx: i32[M, 2]) { take(x, idx, axis = 1) }
        proc c(src: f32[M, N], idx: i32[M]) { scatter_add(src, idx, 4) }
        proc d(src: f32[N, M], idx: i32[M]) { scatter_add(src, idx, 5, axis = 1) }
        proc e(buf: f32[4, N], v: f32[N]) { update(buf, 2, v) }
        proc f(buf: f32[N, 3], v: f32[N]) { update(buf, 1, v, axis = 1) }
        proc g(idx: i32[N]) { one_hot(idx - 1, 3) }
        """)
        // Updates written in place (the buffer is read by nothing after them; an unrolled loop
        // reading the slices it has not overwritten yet), and one that must copy (read after it).
        try check("""
        proc h(x: f32[N, 3]) {
          var hs = exp(broadcast_to(reshape(x, [N, 1, 3]), [N, 4, 3]))
          for t in 0..4 {
            hs = update(hs, t, hs[:, 3 - t] * 2.0 + x, axis = 1)
          }
          hs
        }
        proc i(x: f32[N, 3]) {
          let a = exp(broadcast_to(reshape(x, [N, 1, 3]), [N, 4, 3]))
          let b = update(a, 2, x, axis = 1)
          b - a
        }
        """, tolerance: 1e-5)
    }

    func testMatrixProducts() throws {
        try check("""
        proc a(x: f32[N, 5], w: f32[5, 3]) { x @ w }
        proc b(x: f32[2, N, 5], w: f32[2, 5, 4]) { x @ w }
        proc c(x: f32[2, 3, N, 5], w: f32[3, 5, 2]) { x @ w }
        proc d(x: f32[N, 5], w: f32[3, 5]) { x @ transpose(w, [1, 0]) }
        proc e(x: f32[5, N], w: f32[5, 3]) { transpose(x, [1, 0]) @ w }
        proc f(x: f32[2, 5, N], w: f32[2, 3, 5]) { swapaxes(x, 1, 2) @ swapaxes(w, 1, 2) }
        proc g(x: f32[N, 1], w: f32[1, M]) { x @ w }
        proc h(x: f32[2, N, 5], w: f32[5, 3], v: f32[4, 5]) { x @ w + x @ transpose(v, [1, 0])[:, :3] }
        """, sizes: [1, 3, 17, 33, 200], tolerance: 1e-5)
        // GEMM epilogues: bias-adds (either side, batched rows), activations, two products added.
        try check("""
        proc a(x: f32[N, 5], w: f32[5, 3], b: f32[3]) { relu(x @ w + b) }
        proc b(x: f32[N, 5], w: f32[5, 3], b: f32[3]) { tanh(b + x @ w) * 0.5 }
        proc c(x: f32[2, N, 5], w: f32[5, 3], b: f32[3]) { gelu(x @ w + b) }
        proc d(x: f32[N, 5], w: f32[5, 3], y: f32[N, 4], v: f32[4, 3]) { x @ w + y @ v }
        proc e(x: f32[N, 5], w: f32[5, 3], s: f32[N, 3]) { sigmoid(x @ w - s) }
        proc f(x: f32[N, 5], w: f32[5, 3]) { exp(x @ w) }
        """, sizes: [1, 3, 17, 33, 200], tolerance: 1e-5)
        // Sums of products over the batch: up to 6N = 1200 float32 products per element.
        try check("""
        proc i(x: f32[3, N, 5], y: f32[3, N, 4]) { sum(swapaxes(x, 1, 2) @ y, axis = 0) }
        proc j(a: f32[N, 3, 5], b: f32[N, 5, 2]) { sum(a @ b, axis = 0) }
        proc k(x: f32[2, 3, N, 4], y: f32[2, 3, N, 5]) { sum(swapaxes(x, 2, 3) @ y, axis = [0, 1], keepdims = true) }
        proc l(x: f32[2, 3, N, 4], y: f32[2, 3, N, 5]) { sum(swapaxes(x, 2, 3) @ y, axis = 1) }
        proc m(x: f32[3, N, 5], y: f32[N, 4]) { sum(swapaxes(x, 1, 2) @ y, axis = 0) }
        """, sizes: [1, 3, 17, 33, 200], tolerance: 1e-4)
        // Head splits and merges read and written in place by batches of products: A and B with
        // rows a stride apart, A read transposed, C written row-major and (dk) column-major, B
        // broadcast over a batch axis; and the transposes that stay copies (B would be read
        // transposed; C's rows and columns both strided). Procs o and w contract over N: 200 float32
        // products of [-3, 3] per element, whose rounding OpenBLAS's kernels order by CPU (1.1e-5
        // seen on Zen 3).
        try check("""
        proc s(q: f32[2, N, 3, 4], k: f32[2, N, 3, 4]) { transpose(q, [0, 2, 1, 3]) @ transpose(k, [0, 2, 3, 1]) }
        proc o(p: f32[2, 3, 5, N], v: f32[2, N, 3, 4]) { transpose(p @ transpose(v, [0, 2, 1, 3]), [0, 2, 1, 3]) }
        proc dk(q: f32[2, N, 3, 4], g: f32[2, 3, N, 5]) { transpose(transpose(q, [0, 2, 3, 1]) @ g, [0, 3, 1, 2]) }
        proc dv(p: f32[2, 3, N, 5], g: f32[2, N, 3, 4]) { transpose(swapaxes(p, 2, 3) @ transpose(g, [0, 2, 1, 3]), [0, 2, 1, 3]) }
        proc w(p: f32[2, 3, 5, N], v: f32[N, 3, 4]) { p @ transpose(v, [1, 0, 2]) }
        proc z(a: f32[2, N, 5], b: f32[2, 5, 3]) { transpose(a @ b, [2, 0, 1]) }
        """, sizes: [1, 3, 17, 33, 200], tolerance: 5e-5)
    }

    /// Flat kernels merged into one loop (Kernel/SiblingMerging.swift), the later reading the
    /// earlier's result at the element, and GELU with its derivative as one kernel.
    func testMergedSiblingKernels() throws {
        try check("""
        proc shared(x: f32[N]) { (exp(x), sin(x) * 2.0) }
        proc chained(x: f32[N]) {
          let a = exp(x)
          (a, a * x, gelu(a))
        }
        """, tolerance: 1e-5)
    }

    func testConvolutionsAndPooling() throws {
        try check("""
        proc a(x: f32[2, 3, 9, 8], w: f32[4, 3, 3, 3]) { conv2d(x, w) }
        proc b(x: f32[1, 2, 9, 8], w: f32[3, 2, 3, 2]) { conv2d(x, w, stride = 2, padding = 1) }
        proc c(x: f32[2, 2, 11, 10], w: f32[2, 2, 3, 3]) { conv2d(x, w, stride = [2, 1], padding = [1, 2], dilation = 2) }
        proc d(x: f32[2, 3, 5, 4], w: f32[3, 2, 3, 3]) { conv2d_transpose(x, w, stride = 2, padding = 1, output_padding = 1) }
        proc e(x: f32[2, 3, 5, 4], w: f32[3, 4, 2, 2]) { conv2d_transpose(x, w) }
        proc f(x: f32[2, 3, 8, 7]) { max_pool2d(x, 2) }
        proc g(x: f32[2, 3, 8, 7]) { avg_pool2d(x, 3, stride = 2, padding = 1) }
        proc h(x: f32[1, 2, 7, 7]) { max_pool2d(x, [3, 2], stride = [2, 2], padding = 1) }
        proc i(x: f32[2, 3, 9, 8], w: f32[4, 3, 3, 3], b: f32[4, 1, 1]) { sigmoid(conv2d(x, w, padding = 1) + b) }
        proc j(x: f32[2, 3, 4, 3], w: f32[2, 3, 3, 3]) { conv2d(x, w, padding = 3) }
        proc k(x: f32[2, 3, 5, 4], w: f32[3, 2, 3, 3]) { conv2d_transpose(x, w, padding = 1) }
        proc l(x: f32[2, 3, 5, 4], w: f32[3, 2, 3, 3]) { conv2d_transpose(x, w, padding = 2) }
        """, sizes: [1], tolerance: 1e-5)
        // With stride 1 the columns of a row inside the image are one copy (im2col) or one run of
        // adds (a transposed convolution's col2im) between padding: rows and columns wholly in
        // the padding (j, l, and d below), partly (i, k, b below, c below).
        // Windows wider than the output (the shape of a weight gradient): columns stored by
        // window rows; large enough that im2col runs as a parallel loop inside the group loop.
        // Columns are made 4 MB of channels at a time, each chunk's product added on: 45 channels
        // at 6 x 6 windows of 37 x 37 (one image per group) make chunks of 21, 21 and 3 (proc c).
        try check("""
        proc a(x: f32[2, 8, 40, 40], w: f32[3, 8, 37, 37]) { conv2d(x, w) }
        proc b(x: f32[3, 2, 9, 9], w: f32[4, 2, 6, 7]) { conv2d(x, w, stride = 2, padding = 1) }
        proc c(x: f32[2, 45, 40, 40], w: f32[3, 45, 37, 37]) { conv2d(x, w, padding = 1) }
        """, sizes: [1], tolerance: 1e-4)
        // Products large enough to run one image per thread, straight into the output; the columns
        // allow 2 images per group, so 3 images make a full and a partial group. The elementwise
        // chain consuming a convolution runs over each image after its GEMM (proc c; proc i above:
        // over the grouped products as they are copied out).
        try check("""
        proc a(x: f32[3, 8, 104, 104], w: f32[1, 8, 5, 5]) { conv2d(x, w) }
        proc b(x: f32[3, 4, 121, 121], w: f32[2, 4, 5, 5]) { conv2d(x, w, padding = 2) }
        proc c(x: f32[3, 8, 104, 104], w: f32[2, 8, 5, 5], b: f32[2, 1, 1], r: f32[3, 1, 100, 100]) { relu(conv2d(x, w) + b) - r }
        """, sizes: [1], tolerance: 1e-4)
        // Weight gradients (conv2d of two transposed tensors) computed image by image in 8 parts:
        // fewer images than parts; 9 images with padding and dilation (a strided forward conv).
        try check("""
        proc a(x: f32[3, 16, 20, 20], g: f32[3, 32, 18, 18]) { conv2d(transpose(x, [1, 0, 2, 3]), transpose(g, [1, 0, 2, 3])) }
        proc b(x: f32[9, 8, 27, 27], g: f32[9, 16, 12, 12]) { conv2d(transpose(x, [1, 0, 2, 3]), transpose(g, [1, 0, 2, 3]), padding = 1, dilation = 2) }
        proc c(x: f32[3, 16, 20, 20], g: f32[3, 32, 20, 20]) { conv2d(transpose(x, [1, 0, 2, 3]), transpose(g, [1, 0, 2, 3]), padding = 1) }
        proc d(x: f32[3, 16, 6, 5], g: f32[3, 32, 14, 13]) { conv2d(transpose(x, [1, 0, 2, 3]), transpose(g, [1, 0, 2, 3]), padding = 5) }
        """, sizes: [1], tolerance: 1e-4)
        // A transposed convolution whose columns allow 2 images per group: 3 images make a full and a partial group.
        try check("proc a(x: f32[3, 2, 40, 40], w: f32[2, 4, 16, 16]) { conv2d_transpose(x, w) }", sizes: [1], tolerance: 1e-4)
    }

    /// The pooling gradients exist only in differentiated code: a step's `grad.` function against the interpreter's.
    /// A ReLU's gradient after a pooling gradient runs in the pooling gradient's kernel, after it,
    /// in place (v: windows that tile the input; w: overlapping windows and average pooling).
    func testPoolingGradients() throws {
        try checkGradients("""
        model Pools() {
          param w: f32[2, 3, 8, 7] = normal(1.0)
          param u: f32[2, 3, 8, 8] = ones   // windows that tile it, every one a tie: the first element takes the gradient
          param v: f32[2, 3, 8, 8] = normal(1.0)
        }
        let pools = Pools()
        """, params: "pools", loss: """
        sum(max_pool2d(pools.w * b.x[0, 0], 2) * 1.5) + sum(avg_pool2d(pools.w, 3, stride = 2, padding = 1) * pools.w[0, 0, 0, 0]) + sum(max_pool2d(pools.u, 2) * 0.5) +
          sum(max_pool2d(relu(pools.v), 2) * 2.0) + sum(max_pool2d(relu(pools.w), 2, stride = 1)) + sum(avg_pool2d(relu(pools.w), 2) * 3.0)
        """)
    }

    /// normalize and softmax row by row along the last, the first and a middle axis, reading a
    /// fused producer; their gradients, which exist only in differentiated code, with the output
    /// gradient (a product with a broadcast weight) computed in their kernels.
    func testRowKernelsAndTheirGradients() throws {
        try check("""
        proc a(x: f32[M, N]) { normalize(x) }
        proc b(x: f32[N, M]) { normalize(x * 2.0 - 1.0, axis = 0, eps = 0.5) }
        proc c(x: f32[2, N, M], y: f32[M]) { normalize(x + y, axis = 1) }
        proc d(x: f32[M, N]) { softmax(x * 3.0) }
        proc e(x: f32[N, M]) { softmax(x, axis = 0) }
        proc f(x: f32[2, N, M], y: f32[M]) { softmax(x - y, axis = 1) }
        proc g(x: f32[M, N], y: f32[N]) { normalize(x) * y + 1.0 }
        proc h(x: f32[2, N, M], m: f32[M]) { softmax(x, axis = 1) * m - 0.5 }
        """, tolerance: 1e-5)
        try checkGradients("""
        model Norms() {
          param w: f32[6, 33] = normal(1.0)
          param u: f32[5, 7, 3] = normal(1.0)
          param gamma: f32[33] = normal(1.0)
        }
        let norms = Norms()
        """, params: "norms", loss: """
        sum(normalize(norms.w * b.x[0, 0]) * norms.gamma * norms.w) + sum(normalize(norms.u, axis = 1, eps = 0.1) * norms.u) +
          sum(softmax(norms.w) * norms.gamma * norms.w) + sum(softmax(norms.u * 2.0, axis = 0) * norms.u)
        """)
    }

    /// The `grad.step0` of a training program (`declarations`, then an SGD step on `params` that
    /// minimizes `loss` of a batch b) compiled against the interpreter's, on b.x = [0.5, 1, 2, 3].
    func checkGradients(_ declarations: String, params: String, loss: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let source = declarations + """

        train {
          data = (x = normal([64, 1]), y = normal([64, 1]))
          optim = sgd(\(params), lr = 0.1)
          steps = 1
          batch = 4
          step(b) { minimize optim: \(loss) }
        }
        """
        guard let m = compileOK(source, stopAfter: "dce", file: file, line: line) else { return }
        let jit = try JITProgram(module: m, seed: 3)
        let batch = [Tensor(.f32, [4, 1], [0.5, 1, 2, 3]), Tensor(.f32, [4, 1], [0, 0, 0, 0])]
        let got = try jit.run("grad.step0", batch)
        let reference = Interpreter(module: m, seed: 3)
        reference.globals = jit.globals
        let want = try reference.run("grad.step0", batch)
        XCTAssertEqual(got.count, want.count, file: file, line: line)
        for (g, w) in zip(got, want) {
            for k in w.data.indices { XCTAssertEqual(g.data[k], w.data[k], accuracy: 1e-5 * max(1, abs(w.data[k])), "element \(k)", file: file, line: line) }
        }
    }

    func testRandomOpsMatchTheInterpreterStreams() throws {
        try check("""
        proc a(x: f32[N]) { x + uniform([N], low = -2.0, high = 3.0) }
        proc b(x: f32[N]) { x * normal([N]) }
        proc c(x: f32[N]) { f32(randint([N], -3, 40)) + x }
        proc d(p: f32[N]) { bernoulli(sigmoid(p)) }
        proc e(logits: f32[N, 5]) { categorical(logits) }
        """, tolerance: 1e-5)
    }

    func testRunTimeLoopsCarryValues() throws {
        try check("""
        proc a(x: f32[N]) {
          var acc = x
          var total = 0.0
          loop t in 0..5 {
            acc = acc * 0.5 + normal([N])
            total = total + sum(acc)
          }
          acc + total
        }
        proc b(x: f32[N]) {
          var u = x
          var v = x * 2.0
          loop t in 0..3 {
            let w = u
            u = v
            v = w + f32(t)
          }
          u - v
        }
        """, tolerance: 1e-5)
    }

    /// For every model: the grad function and the first update compiled with fusion (what
    /// binaries run) and without (one kernel per op, not optimized by LLVM either) give the same
    /// loss, gradients and updated state on the same weights, batch and key, up to float32
    /// reassociation (weight gradients summed by one GEMM over the batch, bias-adds accumulated
    /// by the GEMM). Parameters whose gradient is zero in theory (attention key biases) are float
    /// noise either way, which Adam's normalized step turns into full-size steps: their state is
    /// not compared.
    func testFusedAndUnfusedProgramsAgreeOnEveryModel() throws {
        var rng = RobustnessTests.SplitMix(state: 9)
        func differs(_ a: Tensor, _ b: Tensor) -> String? {
            guard a.shape == b.shape else { return "shapes \(a.shape) and \(b.shape)" }
            let diff = zip(a.data, b.data).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }.squareRoot()
            let norm = b.data.reduce(0) { $0 + $1 * $1 }.squareRoot()
            return diff <= 1e-4 * max(norm, 1e-2) ? nil : "differ by \(diff) (norm \(norm))"
        }
        for url in Repo.modelFiles {
            let name = url.deletingPathExtension().lastPathComponent
            let c = Driver.compile(path: url.path, stopAfter: "dce")
            guard let m = c.module, let grad = m.functions.first(where: { $0.kind == .grad }),
                  let step = m.functions.first(where: { $0.kind == .step }) else { XCTFail("\(name): no grad or step function"); continue }
            m.functions = [grad, step]  // compile only what is compared
            let batch = randomBatch(for: grad, rng: &rng)
            func inputs(_ f: Function) -> [Tensor] {
                f.arguments.compactMap { a in batch[String((f.names[a.id] ?? "").split(separator: ".", maxSplits: 1).last ?? "")] }
            }
            let fused = try JITProgram(module: m, seed: 3), unfused = try JITProgram(module: m, seed: 3, fusion: false, optimize: false)
            let gradients = try fused.run(grad.name, inputs(grad), key: 3), reference = try unfused.run(grad.name, inputs(grad), key: 3)
            var noise: [String] = []
            for (i, (f, u)) in zip(gradients, reference).enumerated() {
                if let d = differs(f, u) { XCTFail("\(name) @\(grad.name) \(grad.resultNames[i]): fused and unfused \(d)") }
                if u.data.allSatisfy({ abs($0) < 1e-7 }) { noise.append(String(grad.resultNames[i].dropFirst("grad.".count))) }
            }
            for (f, u) in zip(try fused.run(step.name, inputs(step), key: 3), try unfused.run(step.name, inputs(step), key: 3)) {
                if let d = differs(f, u) { XCTFail("\(name) @\(step.name) output: fused and unfused \(d)") }
            }
            for key in fused.globals.keys.sorted() where !noise.contains(where: { key.hasSuffix($0) }) {
                if let d = differs(fused.globals[key]!, unfused.globals[key]!) { XCTFail("\(name) \(key) after @\(step.name): fused and unfused \(d)") }
            }
        }
    }

    /// A program's distinct kernels (the layers of gpt_fsm share theirs) split into groups that
    /// compile in parallel: each kernel in exactly one group, groups in program order, and no
    /// group heavier than the lightest by more than one kernel's cost (largest first, each to the
    /// lightest group).
    func testKernelGroupsCoverEveryKernelOnceAndBalance() throws {
        var report = Driver.BuildReport()
        let (program, _) = try Driver.lower(path: Repo.models.appendingPathComponent("gpt_fsm.mdl").path, report: &report)
        let context = LLVMContextCreate()!
        defer { LLVMContextDispose(context) }
        let module = LLVMModuleCreateWithNameInContext("entries", context)!
        defer { LLVMDisposeModule(module) }
        let table = try ProgramEmitter(program: program, manifest: "").emitEntries(into: module, context: context, withMain: false)
        XCTAssertGreaterThan(table.entries.count, 50)
        XCTAssertLessThan(table.entries.count, report.kernels, "identical kernels are defined once")
        XCTAssertEqual(Set(table.entries.map(\.kernel.name)).count, table.entries.count)
        let order = Dictionary(uniqueKeysWithValues: table.entries.enumerated().map { ($1.kernel.name, $0) })
        for count in [1, 2, 3, 7] {
            let groups = table.groups(count)
            XCTAssertEqual(groups.count, count)
            XCTAssertEqual(groups.flatMap { $0.map(\.kernel.name) }.sorted(), table.entries.map(\.kernel.name).sorted())
            for g in groups { XCTAssertEqual(g.map { order[$0.kernel.name]! }, g.map { order[$0.kernel.name]! }.sorted()) }
            let loads = groups.map { $0.reduce(0) { $0 + $1.cost } }
            XCTAssertLessThanOrEqual(loads.max()! - loads.min()!, table.entries.map(\.cost).max()!, "\(count) groups: \(loads)")
        }
        XCTAssertEqual(KernelTable().groups(4).count, 1, "no kernels: one empty module (it holds the entry functions' helper)")
    }

    func testTargetIsTheHostCPU() throws {
        let target = try HostTarget()
        let cpu = LLVMGetHostCPUName()!
        defer { LLVMDisposeMessage(cpu) }
        XCTAssertFalse(String(cString: cpu).isEmpty)
        XCTAssertTrue(target.triple.hasPrefix("x86_64") || target.triple.hasPrefix("aarch64"), target.triple)
    }

    /// Elementwise loops vectorize; sums vectorize because (and only because) their adds may reassociate.
    func testKernelLoopsAreVectorized() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("vector-\(getpid()).mdl").path
        try "proc p(a: f32[N], b: f32[N]) { a * b + 1.0 }\nproc q(x: f32[M, N]) { sum(x, axis = 1) }\nproc r(x: f32[N]) { tanh(x) * exp(x) + erf(x) }"
            .write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let text = String(decoding: try Driver.emit(.llvmIR, path: path).parts.joined(), as: UTF8.self)
        let kernels = text.components(separatedBy: "\ndefine ")
        let mul = kernels.first { $0.contains("@p.k1.") && $0.contains("fmul") }
        XCTAssertTrue(mul?.contains(" x float>") ?? false, "the elementwise loop was not vectorized:\n\(text.prefix(3000))")
        // tanh, exp and erf are inline polynomials: no scalar libm call keeps their loop from vectorizing.
        let math = kernels.first { $0.hasPrefix("hidden void @r.k1.") && $0.contains(".part1(") }
        XCTAssertTrue((math?.contains(" x float>") ?? false) && !(math?.contains("@tanhf") ?? true), "tanh * exp + erf was not vectorized:\n\(math ?? text)")
        // The sum's loop (over rows, in parallel) lives in the kernel's `.part` function.
        let sum = kernels.first { $0.hasPrefix("hidden void @q.k1.sum.part1(") }
        XCTAssertTrue(sum?.contains("fadd reassoc nsz <") ?? false, "the sum was not vectorized:\n\(sum ?? text)")
        // Object code: ELF files, the kernels' and the entry functions'.
        let objects = try Driver.emit(.object, path: path).parts
        XCTAssertEqual(objects.count, 2)
        XCTAssertEqual(Array(objects[0].prefix(4)), [0x7F, 0x45, 0x4C, 0x46], "not an ELF object")
    }
}
