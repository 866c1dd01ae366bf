import Foundation
import XCTest
@testable import MDL

/// Finite-difference checks of autodiff in float64 through the reference interpreter.
/// Loss = sum(output * W) for fixed random weights W, so every output element matters.
final class GradientTests: XCTestCase {
    struct Case {
        let source: String          // a `proc p(...)` whose tensor inputs are checked
        var ints: [Int: [Double]] = [:]    // fixed values for i32/bool inputs, by argument index
        var values: [Int: [Double]] = [:]  // fixed values for f32 inputs (e.g. ties)
    }

    /// Central differences against the autodiff gradient for every f32 input of `p`.
    func check(_ c: Case, seed: UInt64 = 1, file: StaticString = #filePath, line: UInt = #line) throws {
        guard let m = compileOK("import std.nn\n" + c.source, file: file, line: line), let f = m.function("p") else { return }
        var rng = RobustnessTests.SplitMix(state: seed)
        // Build loss = sum_i sum(result_i * W_i) and its gradients.
        let ret = f.body.operations.removeLast()
        let b = IRBuilder(f)
        var loss = try b.constant(0)
        for r in ret.operands where f.type(of: r).dtype == .f32 {
            let shape = f.type(of: r).shape
            let n = shape.map { $0.constant! }.reduce(1, *)
            let w = try b.emit(.constant, [], ["value": .list((0..<n).map { _ in .float(Double.random(in: -1...1, using: &rng)) }),
                                              "dtype": .dtype(.f32), "shape": .dims(shape)])
            let axes = Array(0..<shape.count)
            let term = axes.isEmpty ? try b.mul(r, w) : try b.emit(.sum, [try b.mul(r, w)], ["axes": .ints(axes), "keepdims": .bool(false)])
            loss = try b.add(loss, term)
        }
        let inputs = f.arguments.filter { f.names[$0.id] != "key" }
        let wrt = inputs.enumerated().filter { f.type(of: $0.element).dtype == .f32 && c.values[$0.offset] == nil }.map(\.element)
        var missing: [MDL.Operation] = []
        let forward = f.body.operations + b.operations
        let gb = IRBuilder(f)
        var early: [Int: [MDL.Operation]] = [:]
        let grads = try Autodiff.gradients(of: loss, wrt: wrt, ops: forward, builder: gb, missing: &missing, early: &early)
        XCTAssertTrue(missing.isEmpty, "no gradient rule for \(missing.map(\.op.name))", file: file, line: line)
        f.body.operations = Autodiff.placing(early, in: forward) + gb.operations + [MDL.Operation(op: .return, operands: [loss] + grads, results: [], attrs: [:])]
        f.resultTypes = ([loss] + grads).map { f.type(of: $0) }
        f.resultNames = []
        XCTAssertEqual(Verifier().verify(m), [], file: file, line: line)

        var args: [Tensor] = inputs.enumerated().map { i, v in
            let t = f.type(of: v)
            let shape = t.shape.map { $0.constant! }
            let n = shape.reduce(1, *)
            if let fixed = c.ints[i] ?? c.values[i] { return Tensor(t.dtype, shape, fixed) }
            return Tensor(t.dtype, shape, (0..<n).map { _ in Double.random(in: -1.5...1.5, using: &rng) })
        }
        let interpreter = Interpreter(module: m, seed: 1)
        let out = try interpreter.run("p", args, key: 9)
        // Central differences lose about eps * |loss| / h to rounding.
        let noise = 1e-9 * max(1, abs(out[0].scalar))
        for (k, v) in wrt.enumerated() {
            let i = inputs.firstIndex(of: v)!
            let analytic = out[1 + k]
            for e in 0..<args[i].count {
                let x = args[i].data[e], h = 1e-6 * max(1, abs(x))
                args[i].data[e] = x + h
                let up = try interpreter.run("p", args, key: 9)[0].scalar
                args[i].data[e] = x - h
                let down = try interpreter.run("p", args, key: 9)[0].scalar
                args[i].data[e] = x
                let fd = (up - down) / (2 * h), ad = analytic.data[e]
                XCTAssertLessThanOrEqual(abs(fd - ad), 1e-6 * max(abs(fd), abs(ad)) + noise,
                                         "input \(i) element \(e): autodiff \(ad), finite difference \(fd)", file: file, line: line)
            }
        }
    }

    func testElementwiseUnary() throws {
        for op in ["exp", "tanh", "sigmoid", "relu", "gelu", "silu", "softplus", "sin", "cos", "erf", "abs", "-"] {
            let call = op == "-" ? "-x" : "\(op)(x)"
            try check(Case(source: "proc p(x: f32[3, 5]) { \(call) }"))
        }
        try check(Case(source: "proc p(x: f32[7]) { (log(x * x + 0.5), sqrt(x * x + 0.1), rsqrt(x * x + 0.2)) }"))
    }

    func testBinaryWithBroadcastingInEachOperand() throws {
        for op in ["+", "-", "*", "/"] {
            let rhs = op == "/" ? "(b * b + 0.5)" : "b"
            try check(Case(source: "proc p(a: f32[2, 3, 4], b: f32[3, 1]) { a \(op) \(rhs) }"))
            try check(Case(source: "proc p(a: f32[1, 4], b: f32[5, 1]) { a \(op) \(rhs) }"))
            try check(Case(source: "proc p(a: f32[], b: f32[3]) { a \(op) \(rhs) }"))
        }
        try check(Case(source: "proc p(a: f32[3, 4], b: f32[4]) { (pow(a * a + 0.5, b), maximum(a, b), minimum(a, b), a % (b * b + 1.5)) }"))
    }

    func testTiesSplitTheGradient() throws {
        try check(Case(source: "proc p(a: f32[4], b: f32[4]) { maximum(a, b) + minimum(a, b) * 2.0 }",
                       values: [:]), seed: 3)
        // Equal operands: only `a` is free; b is fixed to the same values.
        let v: [Double] = [0.3, -0.7, 1.1, 0.0]
        try check(Case(source: "proc p(a: f32[4], b: f32[4]) { maximum(a, b) }", values: [1: v]))
        try check(Case(source: "proc p(x: f32[2, 3]) { (max(x, axis = 1), min(x, axis = 0) * 0.5) }", values: [:]))
        try check(Case(source: "proc p(x: f32[2, 3], y: f32[2, 3]) { max(x + y * 0.0, axis = 1) }", values: [0: [1, 2, 2, 0.5, 0.5, -1]]))
    }

    func testReductions() throws {
        try check(Case(source: "proc p(x: f32[2, 3, 4]) { (sum(x, axis = 1), mean(x, axis = [0, 2], keepdims = true), logsumexp(x, axis = 2), mean(x)) }"))
        try check(Case(source: "proc p(x: f32[5]) { (cumsum(x), softmax(x), log_softmax(x)) }"))
        try check(Case(source: "proc p(x: f32[2, 3, 4]) { (normalize(x), normalize(x, axis = 0, eps = 0.1), normalize(x * x, axis = 1)) }"))
        try check(Case(source: "proc p(x: f32[2, 3, 4]) { (softmax(x, axis = 0), softmax(x * x, axis = 1)) }"))
    }

    func testShapeOps() throws {
        try check(Case(source: "proc p(x: f32[2, 3, 4]) { (reshape(x, [6, 4]), transpose(x, [2, 0, 1]), broadcast_to(x[:, :1, :], [2, 3, 4]), x.T) }"))
        try check(Case(source: "proc p(x: f32[5, 7]) { (x[1:4, ::2], x[-1], x[:, 6], x[::3, 1:6:2]) }"))
        try check(Case(source: "proc p(a: f32[2, 3], b: f32[2, 1]) { (concat([a, b, a], axis = 1), stack([a, a * 2.0], axis = 0), pad(a, [[1, 2], [0, 3]], value = 0.5)) }"))
    }

    func testIndexingOps() throws {
        try check(Case(source: "proc p(x: f32[5, 3], i: i32[2, 3]) { x[i] }", ints: [1: [0, 4, 4, 2, 0, 1]]))
        try check(Case(source: "proc p(x: f32[3, 5], i: i32[4]) { take(x, i, axis = 1) }", ints: [1: [4, 0, 4, 2]]))
        try check(Case(source: "proc p(s: f32[4, 2], i: i32[4]) { scatter_add(s, i, 3) }", ints: [1: [2, 0, 2, 1]]))
        try check(Case(source: "proc p(b: f32[3, 4], v: f32[4], i: i32[]) { update(b, i, v) }", ints: [2: [1]]))
        try check(Case(source: "proc p(x: f32[3, 4], c: bool[3, 4]) { where(c, x * 2.0, -x) }", ints: [1: [1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 0]]))
    }

    func testMatmulBatchedAndBroadcast() throws {
        try check(Case(source: "proc p(a: f32[2, 3, 4], b: f32[4, 5]) { a @ b }"))
        try check(Case(source: "proc p(a: f32[1, 3, 4], b: f32[2, 4, 1]) { a @ b }"))
        try check(Case(source: "proc p(a: f32[3], b: f32[3, 2]) { (a @ b, b.T @ a) }"))
    }

    func testConvolutionsAndPooling() throws {
        for (stride, pad) in [(1, 0), (1, 1), (2, 1), (2, 0), (3, 2)] {
            try check(Case(source: "proc p(x: f32[2, 3, 7, 6], w: f32[4, 3, 3, 2]) { conv2d(x, w, stride = \(stride), padding = \(pad)) }"))
            try check(Case(source: "proc p(x: f32[2, 3, 4, 3], w: f32[3, 2, 3, 3]) { conv2d_transpose(x, w, stride = \(stride), padding = \(pad)) }"))
        }
        try check(Case(source: "proc p(x: f32[2, 3, 7, 6], w: f32[4, 3, 1, 1]) { conv2d(x, w, stride = [2, 1]) }"))
        try check(Case(source: "proc p(x: f32[1, 2, 6, 5]) { (max_pool2d(x, 2), max_pool2d(x, 3, stride = 2, padding = 1), avg_pool2d(x, 2, stride = 1), avg_pool2d(x, 3, stride = 2, padding = 1)) }"))
    }

    func testLayersOfTheStandardLibrary() throws {
        try check(Case(source: """
        let ln = LayerNorm(4)
        let gn = GroupNorm(2, 4)
        let bn = BatchNorm(4)
        proc p(x: f32[3, 4], y: f32[2, 4, 3, 3]) { (ln(x), gn(y), bn(y)) }
        """))
        try check(Case(source: """
        let attn = MultiHeadAttention(4, 2, causal = true)
        let cross = MultiHeadAttention(4, 2, context_dim = 3)
        proc p(x: f32[2, 3, 4], c: f32[2, 5, 3]) { (attn(x), cross.attend(x, c)) }
        """))
        try check(Case(source: "proc p(l: f32[3, 5], y: i32[3], t: f32[4]) { (cross_entropy(l, y), bce_with_logits(l, l * 0.0 + 0.3), sinusoidal(t, 6)) }", ints: [1: [4, 0, 2]]))
    }
}

/// Every model: the gradient of each step's loss with respect to every parameter, at the
/// model's initial parameters on a tiny batch, against central differences (sampled elements).
final class ModelGradientTests: XCTestCase {
    func testEveryModelsGradients() throws {
        for url in Repo.modelFiles {
            let c = Driver.compile(path: url.path, stopAfter: "autodiff")
            guard let m = c.module else {
                XCTFail("\(url.lastPathComponent): \(c.diagnostics.render())")
                continue
            }
            let start = Date()
            do { try checkModel(m, url.lastPathComponent) } catch { XCTFail("\(url.lastPathComponent): \(error)") }
            print("gradient check \(url.lastPathComponent): \(String(format: "%.1f", Date().timeIntervalSince(start))) s")
        }
    }

    /// Directional derivatives at random parameters (the initialization plus noise): along one
    /// random direction over all parameters, and along random directions within four parameter
    /// tensors spread over the model. Stopped values are held fixed, as autodiff treats them.
    func checkModel(_ m: Module, _ name: String, tensors: Int = 4) throws {
        let harness = InterpreterHarness(module: m)
        let interpreter = harness.interpreter
        let batch = try harness.batch(split: "train", data: m.entries.first { $0.kind == .data })
        var rng = RobustnessTests.SplitMix(state: 5)
        func gaussian() -> Double {
            let u1 = Double.random(in: Double.ulpOfOne..<1, using: &rng), u2 = Double.random(in: 0..<1, using: &rng)
            return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
        }
        for g in m.globals where g.kind == .param { interpreter.globals[g.name]!.data = interpreter.globals[g.name]!.data.map { $0 + 0.05 * gaussian() } }
        let initial = interpreter.globals
        for f in m.functions where f.kind == .step {
            interpreter.globals = initial
            interpreter.stopGradientMode = .record
            let loss0 = try interpreter.run(f.name, batch, key: 3)[0].scalar
            interpreter.stopGradientMode = .replay
            let grads = interpreter.lastGradients
            let names = grads.keys.sorted()
            let spread = names.count <= tensors ? names : (0..<tensors).map { names[$0 * (names.count - 1) / (tensors - 1)] }
            for subset in [names] + spread.map({ [$0] }) {
                var direction: [String: [Double]] = [:]
                for p in subset { direction[p] = (0..<grads[p]!.count).map { _ in gaussian() } }
                let analytic = subset.reduce(0.0) { acc, p in acc + zip(grads[p]!.data, direction[p]!).map(*).reduce(0, +) }
                func lossAt(_ step: Double) throws -> Double {
                    interpreter.globals = initial
                    for p in subset { interpreter.globals[p]!.data = zip(initial[p]!.data, direction[p]!).map { $0 + step * $1 } }
                    return try interpreter.run(f.name, batch, key: 3)[0].scalar
                }
                // A ReLU or max kink within +-h spoils one step size, never all of them; a wrong
                // adjoint disagrees at every step size.
                var agreed = false
                var fds: [Double] = []
                for h in [1e-6, 1e-7, 1e-8] where !agreed {
                    let fd = (try lossAt(h) - (try lossAt(-h))) / (2 * h)
                    fds.append(fd)
                    let noise = 1e-15 * max(1, abs(loss0)) / h * 4
                    agreed = abs(fd - analytic) <= 1e-6 * max(abs(fd), abs(analytic)) + noise
                }
                if !agreed {
                    XCTFail("\(name) @\(f.name) along \(subset.count == 1 ? subset[0] : "all parameters"): autodiff \(analytic), finite differences \(fds)")
                }
            }
            interpreter.stopGradientMode = .normal
        }
        interpreter.globals = initial
    }
}
