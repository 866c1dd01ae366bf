import Foundation

/// The counter-based random numbers of mdl: every value is a pure function of
/// (key, stream, element index), so runs are reproducible and independent of threading.
/// The runtime of generated binaries implements the same functions (docs/IR.md, "Randomness").
enum CounterRNG {
    static func mix(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    static func bits(key: Int32, stream: Int, index: Int) -> UInt64 {
        mix(mix(UInt64(UInt32(bitPattern: key)) << 32 | UInt64(UInt32(truncatingIfNeeded: stream))) ^ UInt64(index))
    }
    /// Uniform in [0, 1) with 24 random bits (exactly representable in f32).
    static func uniform(key: Int32, stream: Int, index: Int) -> Double {
        Double(bits(key: key, stream: stream, index: index) >> 40) * 0x1p-24
    }
    /// Standard normal by Box-Muller from the uniforms at 2i and 2i+1.
    static func normal(key: Int32, stream: Int, index: Int) -> Double {
        let u1 = uniform(key: key, stream: stream, index: 2 * index)
        let u2 = uniform(key: key, stream: stream, index: 2 * index + 1)
        return (-2 * Foundation.log(1 - u1)).squareRoot() * Foundation.cos(2 * Double.pi * u2)
    }
    /// A new key for loop iteration `i`.
    static func fold(key: Int32, _ i: Int32) -> Int32 {
        Int32(truncatingIfNeeded: mix(UInt64(UInt32(bitPattern: key)) << 32 | UInt64(UInt32(bitPattern: i))) >> 32)
    }
    /// Stream of a global's initializer: FNV-1a of its name.
    static func stream(of name: String) -> Int {
        var h: UInt32 = 2_166_136_261
        for b in name.utf8 { h = (h ^ UInt32(b)) &* 16_777_619 }
        return Int(h)
    }
}
