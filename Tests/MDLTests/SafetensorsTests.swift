import Foundation
import XCTest
@testable import MDL

final class SafetensorsTests: XCTestCase {
    func temporary(_ name: String) -> String { FileManager.default.temporaryDirectory.appendingPathComponent("\(UUID())-\(name)").path }

    func testRoundTrip() throws {
        let path = temporary("t.safetensors")
        let tensors: [(String, Tensor)] = [("a", Tensor(.f32, [2, 3], [1, -2.5, 3e-8, 4, 5, 6])), ("b", Tensor(.i32, [4], [1, -2, 3, 2147483647])),
                                           ("c", Tensor(.bool, [2], [1, 0])), ("s", .scalar(0.1))]
        try Safetensors.write(tensors, to: path)
        let back = try Safetensors.read(path)
        for (n, t) in tensors { XCTAssertEqual(back[n], t, n) }
    }

    func testCorruptFilesAreRefusedWithTheReason() throws {
        let path = temporary("c.safetensors")
        try Safetensors.write([("a", Tensor(.f32, [4], [1, 2, 3, 4]))], to: path)
        let good = try Data(contentsOf: URL(fileURLWithPath: path))
        func expectRefusal(_ data: Data, _ reason: String, line: UInt = #line) {
            let bad = temporary("bad.safetensors")
            FileManager.default.createFile(atPath: bad, contents: data)
            XCTAssertThrowsError(try Safetensors.read(bad), line: line) { e in
                XCTAssertTrue("\(e)".contains(reason), "\(e)", line: line)
            }
        }
        expectRefusal(good.prefix(5), "shorter than its 8-byte header length")
        expectRefusal(good.prefix(20), "exceeds the file size")
        expectRefusal(good.prefix(good.count - 8), "does not match its shape")
        var garbled = good
        garbled[9] = UInt8(ascii: "#")
        expectRefusal(garbled, "the header is not a JSON object")
        XCTAssertThrowsError(try Safetensors.read("/nonexistent.safetensors")) { XCTAssertTrue("\($0)".contains("no such file")) }
        // Sizes and offsets chosen to overflow Int arithmetic.
        func file(_ header: String) -> Data {
            var h = Array(header.utf8)
            while h.count % 8 != 0 { h.append(0x20) }
            var d = Data()
            withUnsafeBytes(of: UInt64(h.count).littleEndian) { d.append(contentsOf: $0) }
            d.append(contentsOf: h)
            return d
        }
        expectRefusal(file(#"{"a": {"dtype": "F32", "shape": [0], "data_offsets": [9223372036854775807, 9223372036854775807]}}"#), "does not match its shape")
        expectRefusal(file(#"{"a": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}}"#), "larger than the file")
    }

    func testReferenceGradientsMatchTheInterpreterAndCheckTheirInputs() throws {
        let model = Repo.models.appendingPathComponent("mlp_xor.mdl").path
        let batch = ["x": Tensor(.f32, [4, 2], [0, 0, 0, 1, 1, 0, 1, 1]), "y": Tensor(.f32, [4], [0, 1, 1, 0])]
        let out = try Driver.referenceGradients(path: model, weights: [:], batch: batch)
        XCTAssertEqual(out.first?.0, "loss")
        XCTAssertTrue(out.contains { $0.0.hasPrefix("grad.") })
        XCTAssertThrowsError(try Driver.referenceGradients(path: model, weights: ["nope": .scalar(1)], batch: batch)) {
            XCTAssertTrue("\($0)".contains("does not declare: nope"), "\($0)")
        }
        XCTAssertThrowsError(try Driver.referenceGradients(path: model, weights: [:], batch: ["x": batch["x"]!])) {
            XCTAssertTrue("\($0)".contains("the batch file lacks 'y'"), "\($0)")
        }
    }
}
