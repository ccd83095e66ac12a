// swift-tools-version: 6.1
// Micro benchmarks (ordo-one/package-benchmark): allocation and ARC counts on Tern's hot paths, reported
// per operation. A separate package, as swift-nio arranges it, so the main build and tests never pay for
// the benchmark tool. Run: cd Benchmarks && swift package benchmark
import PackageDescription

let package = Package(
    name: "TernBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "tern", path: "../"),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "TernIOBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "TernIO", package: "tern"),
            ],
            path: "Benchmarks/TernIOBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "TernHTTPBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "TernIO", package: "tern"),
                .product(name: "TernHTTP", package: "tern"),
                .product(name: "TernProxy", package: "tern"),
                .product(name: "TernConfig", package: "tern"),
                .product(name: "TernTelemetry", package: "tern"),
            ],
            path: "Benchmarks/TernHTTPBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
