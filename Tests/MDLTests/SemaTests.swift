import XCTest
@testable import MDL

final class SemaTests: XCTestCase {
    func function(_ m: Module, _ name: String) -> Function? { m.function(name) }

    func testSymbolicShapesFlowThroughLayers() throws {
        guard let m = compileOK("""
        import std.nn
        let net = Linear(4, 3)
        proc p(x: f32[N, T, 4]) { net(x) }
        """) else { return }
        XCTAssertEqual(m.function("p")!.resultTypes.map(\.description), ["f32[N,T,3]"])
    }

    func testShapeErrorNamesBothShapes() {
        let c = compile("proc p(a: f32[B, 128], b: f32[B, 64]) { a + b }")
        XCTAssertEqual(errors(c), ["cannot add f32[B,128] and f32[B,64]"])
    }

    func testUnknownNameSuggestsNearest() {
        let c = compile("import std.nn\nproc p(x: f32[3]) { sofmax(x) }")
        XCTAssertEqual(errors(c), ["unknown name 'sofmax'; did you mean 'softmax'?"])
    }

    func testCompileTimeEvaluation() throws {
        guard let m = compileOK("""
        const H = 4 * 8 / 2
        layer L(n: int) {
          param w: f32[n * 2, H] = uniform(-1.0 / sqrt(n), 1.0 / sqrt(n))
          fn forward(x) { x }
        }
        let l = L(3)
        """) else { return }
        XCTAssertEqual(m.globals.map(\.type.description), ["f32[6,16]"])
        XCTAssertEqual(m.globals[0].initializer, "uniform")
        XCTAssertEqual(m.globals[0].initAttrs["high"]?.doubleValue ?? 0, 1 / 3.0.squareRoot(), accuracy: 1e-12)
    }

    func testMemberConditionalsAndLayerLists() throws {
        guard let m = compileOK("""
        import std.nn
        layer Stack(n: int, bias: bool) {
          blocks = [Linear(2, 2, bias = bias) for i in 0..n]
          fn forward(x) { var h = x
            for b in blocks { h = b(h) }
            h }
        }
        let s = Stack(3, false)
        proc p(x: f32[5, 2]) { s(x) }
        """) else { return }
        XCTAssertEqual(m.globals.map(\.name), ["s.blocks.0.w", "s.blocks.1.w", "s.blocks.2.w"])
        XCTAssertEqual(m.function("p")!.body.operations.filter { $0.op == .matmul }.count, 3)
    }

    func testRuntimeLoopCarriesVariables() throws {
        guard let m = compileOK("""
        proc p(x: f32[3]) {
          var a = x
          var n = 0.0
          loop i in 0..10 { a = a * 0.5 + normal([3]); n = n + 1.0 }
          (a, n)
        }
        """) else { return }
        let f = m.function("p")!
        let loop = f.body.operations.first { $0.op == .loop }!
        XCTAssertEqual(loop.results.count, 2)
        XCTAssertTrue(loop.regions[0].operations.contains { $0.op == .rng_fold }, "random draws in a loop must fold the key with the index")
        let out = try Interpreter(module: m).run("p", [Tensor(.f32, [3], [1, 2, 3])], key: 1)
        XCTAssertEqual(out[1].scalar, 10)
    }

    func testTrainingFlagSelectsBranches() throws {
        guard let m = compileOK("""
        import std.nn
        model M() {
          bn = BatchNorm(2, spatial = false)
          drop = Dropout(0.5)
          fn forward(x: f32[B, 2]) { drop(bn(x)) }
        }
        let model = M()
        train {
          data = digits("data/digits")
          o = sgd(model, lr = 0.1)
          epochs = 1
          batch = 4
          step(b) { minimize o: mean(model(b.x[:, :2])) }
          eval on data.test (b) { m = mean(model(b.x[:, :2])) }
        }
        """) else { return }
        let step = m.function("step0")!, eval = m.function("eval.test")!
        XCTAssertEqual(step.body.operations.filter { $0.op == .global_set }.count, 2, "training updates the running statistics")
        XCTAssertTrue(step.body.operations.contains { $0.op == .random_uniform }, "dropout draws in training")
        XCTAssertFalse(eval.body.operations.contains { $0.op == .global_set || $0.op == .random_uniform }, "evaluation is deterministic and stateless")
    }

    func testGANStepsBecomeTwoFunctions() throws {
        guard let m = compileOK("""
        import std.nn
        let G = Linear(2, 2)
        let D = Linear(2, 1)
        fn real(n: int) { (x = normal([n, 2]) + 3.0) }
        train {
          data = real(256)
          d_opt = adam(D, lr = 1e-3)
          g_opt = adam(G, lr = 1e-3)
          steps = 10
          batch = 8
          step(b) {
            let z = normal([B, 2])
            minimize d_opt: bce_with_logits(D(b.x), 1.0) + bce_with_logits(D(stop_gradient(G(z))), 0.0)
            minimize g_opt: bce_with_logits(D(G(z)), 1.0)
          }
        }
        """) else { return }
        XCTAssertEqual(m.functions.filter { $0.kind == .step }.map(\.name), ["step0", "step1"])
        XCTAssertEqual(m.entries.filter { $0.kind == .optimizer }.map { $0.attrs["params"]!.symbols! }, [["D.w", "D.b"], ["G.w", "G.b"]])
        XCTAssertEqual(m.recipe["steps"], .int(10))
    }

    func testFrozenParametersAreExcluded() throws {
        guard let m = compileOK("""
        import std.nn
        model M() { a = Linear(2, 2)
          b = Linear(2, 2)
          fn forward(x) { b(a(x)) } }
        let model = M()
        train {
          data = digits("d")
          o = sgd(model, lr = 0.1, frozen = [model.a])
          epochs = 1
          batch = 2
          step(b) { minimize o: mean(model(b.x[:, :2])) }
        }
        """) else { return }
        XCTAssertEqual(m.entries.first { $0.kind == .optimizer }!.attrs["params"]!.symbols!, ["model.b.w", "model.b.b"])
    }

    func testIndexingLowersToSliceReshapeAndTake() throws {
        guard let m = compileOK("proc p(x: f32[4, 5, 6], i: i32[7]) { (x[1, 1:4, ...], x[..., -1], x[i]) }") else { return }
        let f = m.function("p")!
        XCTAssertEqual(f.resultTypes.map(\.description), ["f32[3,6]", "f32[4,5]", "f32[7,5,6]"])
    }
}
