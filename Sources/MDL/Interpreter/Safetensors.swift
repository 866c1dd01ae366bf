import Foundation

/// Reads and writes safetensors files (an 8-byte little-endian header length, a JSON header
/// mapping names to dtype, shape and byte offsets, then the raw little-endian data), so weights,
/// batches and gradients move between mdl, PyTorch and JAX.
public enum Safetensors {
    public struct FormatError: Error, CustomStringConvertible {
        public let description: String
    }

    /// Element encodings that can be read; tensors are written as F64 (f32 values), I32 or BOOL.
    static let widths: [String: Int] = ["F64": 8, "F32": 4, "I64": 8, "I32": 4, "BOOL": 1, "U8": 1]

    public static func read(_ path: String) throws -> [String: Tensor] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw FormatError(description: FileManager.default.fileExists(atPath: path) ? "cannot read '\(path)'" : "no such file: '\(path)'")
        }
        return try decode(data, path: path)
    }

    static func decode(_ data: Data, path: String) throws -> [String: Tensor] {
        let bytes = [UInt8](data)
        func fail(_ m: String) -> FormatError { FormatError(description: "'\(path)' is not a valid safetensors file: \(m)") }
        guard bytes.count >= 8 else { throw fail("it is shorter than its 8-byte header length") }
        let headerLength = bytes[0..<8].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        guard headerLength <= UInt64(bytes.count - 8) else { throw fail("the header length \(headerLength) exceeds the file size \(bytes.count)") }
        let body = 8 + Int(headerLength)
        guard let header = try? JSONSerialization.jsonObject(with: Data(bytes[8..<body])) as? [String: Any] else { throw fail("the header is not a JSON object") }
        var out: [String: Tensor] = [:]
        for (name, value) in header where name != "__metadata__" {
            guard let entry = value as? [String: Any], let dtype = entry["dtype"] as? String,
                  let shape = (entry["shape"] as? [NSNumber])?.map(\.intValue), let offsets = (entry["data_offsets"] as? [NSNumber])?.map(\.intValue),
                  offsets.count == 2 else { throw fail("the entry '\(name)' lacks dtype, shape or data_offsets") }
            guard let width = widths[dtype] else { throw fail("'\(name)' has the unsupported dtype \(dtype)") }
            guard shape.allSatisfy({ $0 >= 0 }) else { throw fail("'\(name)' has a negative size") }
            var count = 1
            for d in shape {
                let (p, overflow) = count.multipliedReportingOverflow(by: d)
                guard !overflow, p <= bytes.count else { throw fail("'\(name)' has shape \(shape), larger than the file") }
                count = p
            }
            guard offsets[0] >= 0, offsets[1] >= offsets[0], offsets[1] <= bytes.count - body, offsets[1] - offsets[0] == count * width else {
                throw fail("the data of '\(name)' (offsets \(offsets)) does not match its shape \(shape) or lies outside the file")
            }
            var values = [Double](repeating: 0, count: count)
            let base = body + offsets[0]
            for i in 0..<count {
                var bits: UInt64 = 0
                for k in 0..<width { bits |= UInt64(bytes[base + i * width + k]) << (8 * UInt64(k)) }
                switch dtype {
                case "F64": values[i] = Double(bitPattern: bits)
                case "F32": values[i] = Double(Float(bitPattern: UInt32(truncatingIfNeeded: bits)))
                case "I64": values[i] = Double(Int64(bitPattern: bits))
                case "I32": values[i] = Double(Int32(bitPattern: UInt32(truncatingIfNeeded: bits)))
                default: values[i] = Double(bits)
                }
            }
            let type: DType = dtype.hasPrefix("F") ? .f32 : dtype == "BOOL" ? .bool : .i32
            if type == .i32, let bad = values.first(where: { !fitsInt32(Int($0)) }) {
                throw fail("'\(name)' holds \(Int(bad)), outside the i32 range")
            }
            out[name] = Tensor(type, shape, values)
        }
        return out
    }

    /// Writes tensors atomically (temporary file, fsync, rename): f32 tensors as F64, so
    /// interpreter results keep their precision.
    public static func write(_ tensors: [(String, Tensor)], to path: String) throws {
        var header: [String: Any] = [:]
        var payload = [UInt8]()
        for (name, t) in tensors {
            let dtype = t.dtype == .f32 ? "F64" : t.dtype == .i32 ? "I32" : "BOOL"
            let start = payload.count
            for v in t.data {
                switch t.dtype {
                case .f32: withUnsafeBytes(of: v.bitPattern.littleEndian) { payload += $0 }
                case .i32: withUnsafeBytes(of: Int32(truncatingIfNeeded: exactInt(v) ?? 0).littleEndian) { payload += $0 }
                case .bool: payload.append(v != 0 ? 1 : 0)
                }
            }
            header[name] = ["dtype": dtype, "shape": t.shape, "data_offsets": [start, payload.count]]
        }
        var json = [UInt8](try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys]))
        while (8 + json.count) % 8 != 0 { json.append(0x20) }
        var file = [UInt8]()
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { file += $0 }
        file += json
        file += payload
        let temporary = path + ".tmp-\(getpid())"
        guard FileManager.default.createFile(atPath: temporary, contents: Data(file)) else {
            throw FormatError(description: "cannot write '\(temporary)'")
        }
        let fd = open(temporary, O_RDONLY)
        if fd >= 0 { fsync(fd); close(fd) }
        guard rename(temporary, path) == 0 else {
            unlink(temporary)
            throw FormatError(description: "cannot replace '\(path)': \(String(cString: strerror(errno)))")
        }
    }
}
