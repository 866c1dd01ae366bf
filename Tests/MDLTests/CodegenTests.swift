import CLLVM
import Foundation
import XCTest
@testable import MDL

/// Generated kernels against the reference interpreter on random inputs, at sizes that are
/// and are not multiples of the vector width.
final class CodegenTests: XCTestCase {
    typealias Kernel1 = @convention(c) (UnsafeMutablePointer<Float>?, UnsafePointer<Float>?, Int64) -> Void
    typealias Kernel2 = @convention(c) (UnsafeMutablePointer<Float>?, UnsafePointer<Float>?, UnsafePointer<Float>?, Int64) -> Void

    let target = try! HostTarget()

    /// Compiles `proc p(...)` (inputs f32[N] or f32[]) into a JIT kernel and compares it with the interpreter.
    func check(_ source: String, tolerance: Double = 2e-6, range: ClosedRange<Double> = -3...3, file: StaticString = #filePath, line: UInt = #line) throws {
        guard let m = compileOK("import std.nn\n" + source, file: file, line: line), let f = m.function("p") else { return }
        let jit = try JIT()
        let module = LLVMModuleCreateWithNameInContext("kernels", jit.llvmContext)!
        let kernel = ElementwiseKernel(function: f)
        try kernel.emit(name: "p", into: module, context: jit.llvmContext)
        var message: UnsafeMutablePointer<CChar>?
        XCTAssertEqual(LLVMVerifyModule(module, LLVMReturnStatusAction, &message), 0, message.map { String(cString: $0) } ?? "", file: file, line: line)
        LLVMDisposeMessage(message)
        try target.optimize(module)
        try jit.add(module)
        let address = try jit.address(of: "p")
        var rng = RobustnessTests.SplitMix(state: 11)
        for n in [1, 3, 17, 33, 1000] {
            let inputs: [[Float]] = kernel.scalarInputs.map { scalar in (0..<(scalar ? 1 : n)).map { _ in Float(Double.random(in: range, using: &rng)) } }
            var out = [Float](repeating: .nan, count: n)
            switch inputs.count {
            case 1:
                let fp = unsafeBitCast(UnsafeRawPointer(bitPattern: UInt(address))!, to: Kernel1.self)
                inputs[0].withUnsafeBufferPointer { a in fp(&out, a.baseAddress, Int64(n)) }
            case 2:
                let fp = unsafeBitCast(UnsafeRawPointer(bitPattern: UInt(address))!, to: Kernel2.self)
                inputs[0].withUnsafeBufferPointer { a in inputs[1].withUnsafeBufferPointer { b in fp(&out, a.baseAddress, b.baseAddress, Int64(n)) } }
            default: XCTFail("unsupported arity"); return
            }
            let reference = try Interpreter(module: m).run("p", zip(inputs, kernel.scalarInputs).map { v, s in
                Tensor(.f32, s ? [] : [n], v.map(Double.init))
            })[0]
            for k in 0..<n where !(abs(Double(out[k]) - reference.data[k]) <= tolerance * max(1, abs(reference.data[k]))) {
                XCTFail("\(source) n=\(n) element \(k): kernel \(out[k]), interpreter \(reference.data[k])", file: file, line: line)
                break
            }
        }
    }

    typealias Gemm = @convention(c) (UnsafeMutablePointer<Float>?, UnsafePointer<Float>?, UnsafePointer<Float>?, Int32, Int32, Int32) -> Void

    /// Generated calls of OpenBLAS's sgemm, with transposes folded into the call, against the interpreter's matmul.
    func testGemmCallsOpenBLAS() throws {
        var rng = RobustnessTests.SplitMix(state: 21)
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let jit = try JIT()
            let module = LLVMModuleCreateWithNameInContext("gemm", jit.llvmContext)!
            GemmCall(transposeA: ta, transposeB: tb).emit(name: "gemm", into: module, context: jit.llvmContext)
            try target.optimize(module)
            try jit.add(module)
            let fp = unsafeBitCast(UnsafeRawPointer(bitPattern: UInt(try jit.address(of: "gemm")))!, to: Gemm.self)
            for (m, n, k) in [(1, 1, 1), (3, 17, 33), (33, 3, 17), (64, 100, 70)] {
                let aShape = ta ? [k, m] : [m, k], bShape = tb ? [n, k] : [k, n]
                let a = (0..<(m * k)).map { _ in Float(Double.random(in: -1...1, using: &rng)) }
                let bv = (0..<(k * n)).map { _ in Float(Double.random(in: -1...1, using: &rng)) }
                var c = [Float](repeating: .nan, count: m * n)
                a.withUnsafeBufferPointer { ap in bv.withUnsafeBufferPointer { bp in fp(&c, ap.baseAddress, bp.baseAddress, Int32(m), Int32(n), Int32(k)) } }
                let source = "proc p(a: f32[\(aShape[0]), \(aShape[1])], b: f32[\(bShape[0]), \(bShape[1])]) { \(ta ? "a.T" : "a") @ \(tb ? "b.T" : "b") }"
                guard let mod = compileOK(source) else { return }
                let reference = try Interpreter(module: mod).run("p", [Tensor(.f32, aShape, a.map(Double.init)), Tensor(.f32, bShape, bv.map(Double.init))])[0]
                for i in 0..<(m * n) where abs(Double(c[i]) - reference.data[i]) > 1e-5 * max(1, abs(reference.data[i])) {
                    XCTFail("sgemm ta=\(ta) tb=\(tb) \(m)x\(n)x\(k) element \(i): \(c[i]) vs \(reference.data[i])")
                    break
                }
            }
        }
    }

    typealias Reduce = @convention(c) (UnsafeMutablePointer<Float>?, UnsafePointer<Float>?, Int64, Int64) -> Void

    /// Reductions over the last axis against the interpreter; the reassociated sum vectorizes.
    func testReductionsOverTheLastAxis() throws {
        var rng = RobustnessTests.SplitMix(state: 31)
        for (kind, builtin) in [(ReductionKernel.Kind.sum, "sum"), (.mean, "mean"), (.max, "max"), (.min, "min")] {
            let jit = try JIT()
            let module = LLVMModuleCreateWithNameInContext("reduce", jit.llvmContext)!
            ReductionKernel(kind: kind).emit(name: "reduce", into: module, context: jit.llvmContext)
            var message: UnsafeMutablePointer<CChar>?
            XCTAssertEqual(LLVMVerifyModule(module, LLVMReturnStatusAction, &message), 0, message.map { String(cString: $0) } ?? "")
            LLVMDisposeMessage(message)
            try target.optimize(module)
            if kind == .sum {
                let text = LLVMPrintModuleToString(module)!
                XCTAssertTrue(String(cString: text).contains(" x float>"), "the sum was not vectorized")
                LLVMDisposeMessage(text)
            }
            try jit.add(module)
            let fp = unsafeBitCast(UnsafeRawPointer(bitPattern: UInt(try jit.address(of: "reduce")))!, to: Reduce.self)
            for (rows, cols) in [(1, 1), (3, 17), (2, 33), (5, 1000)] {
                let x = (0..<(rows * cols)).map { _ in Float(Double.random(in: -2...2, using: &rng)) }
                var out = [Float](repeating: .nan, count: rows)
                x.withUnsafeBufferPointer { fp(&out, $0.baseAddress, Int64(rows), Int64(cols)) }
                guard let m = compileOK("proc p(x: f32[\(rows), \(cols)]) { \(builtin)(x, axis = 1) }") else { return }
                let reference = try Interpreter(module: m).run("p", [Tensor(.f32, [rows, cols], x.map(Double.init))])[0]
                for i in 0..<rows where abs(Double(out[i]) - reference.data[i]) > 1e-5 * Double(cols).squareRoot() * max(1, abs(reference.data[i])) {
                    XCTFail("\(builtin) \(rows)x\(cols) row \(i): \(out[i]) vs \(reference.data[i])")
                    break
                }
            }
        }
    }

    func testTargetIsTheHostCPU() throws {
        let cpu = LLVMGetHostCPUName()!
        defer { LLVMDisposeMessage(cpu) }
        XCTAssertFalse(String(cString: cpu).isEmpty)
        XCTAssertTrue(target.triple.hasPrefix("x86_64") || target.triple.hasPrefix("aarch64"), target.triple)
    }

    func testKernelLoopsAreVectorized() throws {
        guard let m = compileOK("proc p(a: f32[N], b: f32[N]) { a * b + 1.0 }"), let f = m.function("p") else { return }
        let jit = try JIT()
        let module = LLVMModuleCreateWithNameInContext("kernels", jit.llvmContext)!
        try ElementwiseKernel(function: f).emit(name: "p", into: module, context: jit.llvmContext)
        try target.optimize(module)
        let text = LLVMPrintModuleToString(module)!
        defer { LLVMDisposeMessage(text) }
        XCTAssertTrue(String(cString: text).contains(" x float>"), "the loop was not vectorized:\n\(String(cString: text))")
        // An object file can be emitted, twice: emission works on a clone and leaves the module intact.
        let object = try target.objectCode(module)
        XCTAssertEqual(Array(object.prefix(4)), [0x7F, 0x45, 0x4C, 0x46], "not an ELF object")
        XCTAssertEqual(try target.objectCode(module).count, object.count)
        LLVMDisposeModule(module)
    }

    func testUnaryOps() throws {
        for op in ["exp", "tanh", "sigmoid", "relu", "gelu", "silu", "softplus", "sin", "cos", "erf", "abs", "floor", "sign"] {
            try check("proc p(x: f32[N]) { \(op)(x) }")
        }
        try check("proc p(x: f32[N]) { (-x) }")
        try check("proc p(x: f32[N]) { log(x) }", range: 0.01...5)
        try check("proc p(x: f32[N]) { sqrt(x) }", range: 0...5)
        try check("proc p(x: f32[N]) { rsqrt(x) }", range: 0.05...5)
    }

    func testBinaryOpsAndScalarBroadcast() throws {
        for op in ["+", "-", "*"] {
            try check("proc p(a: f32[N], b: f32[N]) { a \(op) b }")
            try check("proc p(a: f32[N], s: f32) { a \(op) s }")
        }
        try check("proc p(a: f32[N], b: f32[N]) { a / (b * b + 0.5) }")
        try check("proc p(a: f32[N], b: f32[N]) { maximum(a, b) - minimum(a, b) * 2.0 }")
        try check("proc p(a: f32[N], b: f32[N]) { pow(a * a + 0.1, b) }", tolerance: 1e-5)
        try check("proc p(a: f32[N], b: f32[N]) { a % (b * b + 1.0) }", tolerance: 1e-5)
    }

    func testFusedChains() throws {
        try check("proc p(x: f32[N], y: f32[N]) { gelu(x) * sigmoid(y) + tanh(x - y) * 0.5 }")
        try check("proc p(x: f32[N], t: f32) { softplus(x * t) - log(exp(x) + 1.0) + relu(-x) }", tolerance: 1e-5)
    }
}
