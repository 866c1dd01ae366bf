/// A dense row-major tensor of the reference interpreter. Every element type is held as a
/// Double (f32 is computed in float64; i32 and bool are exact), so the oracle is simple.
public struct Tensor: Equatable, CustomStringConvertible {
    public var dtype: DType
    public var shape: [Int]
    public var data: [Double]

    public init(_ dtype: DType, _ shape: [Int], _ data: [Double]) {
        precondition(data.count == shape.reduce(1, *), "tensor data does not match its shape")
        self.dtype = dtype
        self.shape = shape
        self.data = data
    }
    public init(_ dtype: DType, _ shape: [Int], repeating v: Double) {
        self.init(dtype, shape, Array(repeating: v, count: shape.reduce(1, *)))
    }
    public static func scalar(_ v: Double, _ dtype: DType = .f32) -> Tensor { Tensor(dtype, [], [v]) }

    public var count: Int { data.count }
    public var scalar: Double { data[0] }
    public var description: String { "\(dtype.rawValue)\(shape) \(data.prefix(8).map { String(format: "%.4g", $0) })\(count > 8 ? "..." : "")" }
}

/// Row-major strides of a shape.
func strides(_ shape: [Int]) -> [Int] {
    var s = Array(repeating: 1, count: shape.count)
    var acc = 1
    for i in stride(from: shape.count - 1, through: 0, by: -1) {
        s[i] = acc
        acc *= shape[i]
    }
    return s
}

/// Strides that read `shape` as if broadcast to `out` (0 along broadcast axes).
func broadcastStrides(_ shape: [Int], to out: [Int]) -> [Int] {
    let st = strides(shape)
    let offset = out.count - shape.count
    return (0..<out.count).map { i in
        i < offset ? 0 : (shape[i - offset] == 1 && out[i] != 1 ? 0 : st[i - offset])
    }
}

/// Calls `body` with the flat offset into each operand for every output element, in order.
func forEachIndex(_ out: [Int], _ operandStrides: [[Int]], _ body: ([Int]) -> Void) {
    let n = out.reduce(1, *)
    if n == 0 { return }
    var idx = Array(repeating: 0, count: out.count)
    var offsets = Array(repeating: 0, count: operandStrides.count)
    for _ in 0..<n {
        body(offsets)
        var d = out.count - 1
        while d >= 0 {
            idx[d] += 1
            for k in 0..<operandStrides.count { offsets[k] += operandStrides[k][d] }
            if idx[d] < out[d] { break }
            for k in 0..<operandStrides.count { offsets[k] -= operandStrides[k][d] * out[d] }
            idx[d] = 0
            d -= 1
        }
    }
}
