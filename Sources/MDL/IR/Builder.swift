/// An internal inconsistency found by a pass: reported as an internal compiler error, never a crash.
struct InternalError: Error { let message: String }

/// Builds operations for passes: result types come from the op table, and helpers cover the
/// idioms passes need (scalar constants, reductions back to a shape, broadcasting).
final class IRBuilder {
    let function: Function
    private(set) var operations: [Operation] = []
    var location: SourceRange = .unknown

    init(_ function: Function) { self.function = function }

    func type(_ v: Value) -> TensorType { function.type(of: v) }
    func shape(_ v: Value) -> [Dim] { function.type(of: v).shape }

    func append(_ op: Operation) { operations.append(op) }

    @discardableResult
    func emit(_ op: OpKind, _ operands: [Value], _ attrs: [String: Attr] = [:]) throws -> Value {
        let types: [TensorType]
        do { types = try op.inferTypes(operands.map(type), attrs) } catch let e as TypeError {
            throw InternalError(message: "building '\(op.name)': \(e.message)")
        }
        guard types.count == 1 else { throw InternalError(message: "building '\(op.name)': expected one result") }
        let v = function.newValue(types[0])
        operations.append(Operation(op: op, operands: operands, results: [v], attrs: attrs, location: location))
        return v
    }

    /// Reads a global; its type is the module's declaration.
    func load(_ name: String, _ type: TensorType) -> Value {
        let v = function.newValue(type)
        operations.append(Operation(op: .global, operands: [], results: [v], attrs: ["name": .symbol(name)], location: location))
        return v
    }

    func constant(_ x: Double, _ dtype: DType = .f32, shape: [Dim] = []) throws -> Value {
        let value: Attr = dtype == .f32 ? .float(x) : dtype == .i32 ? .int(exactInt(x).flatMap { fitsInt32($0) ? $0 : nil } ?? 0) : .bool(x != 0)
        return try emit(.constant, [], ["value": value, "dtype": .dtype(dtype), "shape": .dims(shape)])
    }
    func zeros(like v: Value) throws -> Value { try constant(0, type(v).dtype, shape: shape(v)) }

    func add(_ a: Value, _ b: Value) throws -> Value { try emit(.add, [a, b]) }
    func sub(_ a: Value, _ b: Value) throws -> Value { try emit(.sub, [a, b]) }
    func mul(_ a: Value, _ b: Value) throws -> Value { try emit(.mul, [a, b]) }
    func div(_ a: Value, _ b: Value) throws -> Value { try emit(.div, [a, b]) }
    func neg(_ a: Value) throws -> Value { try emit(.neg, [a]) }
    func scale(_ a: Value, _ c: Double) throws -> Value { try mul(a, try constant(c, type(a).dtype)) }
    func reshape(_ v: Value, _ shape: [Dim]) throws -> Value {
        self.shape(v) == shape ? v : try emit(.reshape, [v], ["shape": .dims(shape)])
    }
    func broadcast(_ v: Value, to shape: [Dim]) throws -> Value {
        self.shape(v) == shape ? v : try emit(.broadcast, [v], ["shape": .dims(shape)])
    }
    func transpose(_ v: Value, _ perm: [Int]) throws -> Value {
        perm == Array(0..<perm.count) ? v : try emit(.transpose, [v], ["perm": .ints(perm)])
    }
    /// The run-time value of a size as an f32 scalar (a constant when it is static).
    func size(_ d: Dim) throws -> Value {
        if let c = d.constant { return try constant(Double(c)) }
        return try emit(.cast, [try emit(.sym, [], ["dim": .dim(d)])], ["dtype": .dtype(.f32)])
    }

    /// Sums a broadcast result back to the shape of the operand that was broadcast.
    func unbroadcast(_ g: Value, to target: [Dim]) throws -> Value {
        let s = shape(g)
        if s == target { return g }
        let extra = s.count - target.count
        var axes = Array(0..<extra)
        for (i, d) in target.enumerated() where d == 1 && s[i + extra] != 1 { axes.append(i + extra) }
        let summed = axes.isEmpty ? g : try emit(.sum, [g], ["axes": .ints(axes), "keepdims": .bool(false)])
        return try reshape(summed, target)
    }

    /// Re-inserts reduced axes (as size 1) and broadcasts a reduction's result back to `shape`.
    func expandReduced(_ g: Value, axes: [Int], keepdims: Bool, to shape: [Dim]) throws -> Value {
        var kept = shape
        for a in normalizedAxes(axes, rank: shape.count) { kept[a] = 1 }
        let withAxes = keepdims ? g : try reshape(g, kept)
        return try broadcast(withAxes, to: shape)
    }
}
