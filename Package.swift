// swift-tools-version:5.9
import PackageDescription

// LLVM 19 has no pkg-config file; its headers live here (see docs/TOOLCHAIN.md).
let llvmInclude = "-I/usr/lib/llvm-19/include"

let package = Package(
    name: "mdl",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "mdlc", targets: ["mdlc"]),
        .library(name: "MDL", targets: ["MDL"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .systemLibrary(name: "CLLVM", path: "Sources/CLLVM"),
        .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS", pkgConfig: "openblas"),
        .target(
            name: "MDL",
            dependencies: ["CLLVM", "COpenBLAS", "MDLRuntime"],
            path: "Sources/MDL",
            cSettings: [.unsafeFlags([llvmInclude])],
            // Optimized even in debug builds: the reference interpreter runs whole models in the tests.
            swiftSettings: [.unsafeFlags(["-Xcc", llvmInclude, "-O"])],
            linkerSettings: [.unsafeFlags(["-L/usr/lib/llvm-19/lib"])]
        ),
        // The runtime linked into every generated binary (docs/RUNTIME.md). mdlc depends on it so
        // that SwiftPM compiles it: `mdlc build` links its objects from MDLRuntime.build/.
        .target(
            name: "MDLRuntime",
            path: "Runtime",
            exclude: ["tests"],
            publicHeadersPath: "include",
            cSettings: [.unsafeFlags(["-O2"])]
        ),
        .executableTarget(
            name: "mdlc",
            dependencies: ["MDL", "MDLRuntime", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Sources/mdlc",
            swiftSettings: [.unsafeFlags(["-Xcc", llvmInclude])]
        ),
        .testTarget(
            name: "MDLTests",
            dependencies: ["MDL", "MDLRuntime"],
            path: "Tests/MDLTests",
            exclude: ["Inputs"],
            swiftSettings: [.unsafeFlags(["-Xcc", llvmInclude])],
            // The JIT-compiled code under test calls the runtime linked into the test binary.
            linkerSettings: [.unsafeFlags(["-Xlinker", "--export-dynamic"])]
        ),
    ]
)
