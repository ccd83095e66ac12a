// swift-tools-version: 6.2
// Tern: a service-mesh sidecar proxy. Layers (ARCHITECTURE.md §2): C shims → TernCore → TernIO → TernProxy → tern.
import PackageDescription

/// Every Swift target: strict memory safety (unsafe code only in `*+Unsafe.swift`, enforced by
/// Tools/scripts/check-unsafe.sh) and warnings as errors.
let strict: [SwiftSetting] = [
    .strictMemorySafety(),
    .treatAllWarnings(as: .error),
]

let package = Package(
    name: "tern",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "tern", targets: ["tern"]),
        .executable(name: "tern-engine", targets: ["tern-engine"]),
        .executable(name: "tern-load", targets: ["tern-load"]),
        // For the separate Benchmarks package (package-benchmark), which measures these libraries.
        .library(name: "TernIO", targets: ["TernIO", "TernCore"]),
        // For the fuzz package (Tools/fuzz).
        .library(name: "TernHTTP", targets: ["TernHTTP"]),
        .library(name: "TernProxy", targets: ["TernProxy"]),
        .library(name: "TernConfig", targets: ["TernConfig"]),
        .library(name: "TernTelemetry", targets: ["TernTelemetry"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
    ],
    targets: [
        .target(
            name: "CTernLinux",
            cSettings: [.define("_GNU_SOURCE")],
            linkerSettings: [.linkedLibrary("uring")]
        ),
        .target(name: "TernCore", swiftSettings: strict),
        .target(name: "TernIO", dependencies: ["TernCore", "CTernLinux"], swiftSettings: strict),
        .target(name: "TernHTTP", dependencies: ["TernCore"], swiftSettings: strict),
        // Metrics shards and exposition, access-log formatting, trace context (issue 6): no system calls.
        .target(name: "TernTelemetry", dependencies: ["TernCore"], swiftSettings: strict),
        .target(
            name: "TernProxy", dependencies: ["TernCore", "TernIO", "TernHTTP", "TernConfig", "TernTelemetry"],
            swiftSettings: strict + [.enableExperimentalFeature("Lifetimes")]
        ),
        // libyaml (Debian's libyaml-dev) for the config service: a module map, no C code.
        .systemLibrary(name: "CTernYAML"),
        // PCRE2 with JIT (Debian's libpcre2-dev) for route regexes: thin C over its width-suffixed macros.
        .target(name: "CTernPCRE2", linkerSettings: [.linkedLibrary("pcre2-8")]),
        // Istio configuration (issue 4): decode, validate, compile into an immutable RouteTable.
        // A pure library: no system call beyond reading the config files, no reactor code.
        .target(
            name: "TernConfig",
            dependencies: ["TernCore", "CTernYAML", "CTernPCRE2"],
            swiftSettings: strict + [.enableExperimentalFeature("Lifetimes")]
        ),
        .executableTarget(
            name: "tern",
            dependencies: [
                "TernProxy", "TernIO", "TernCore", "TernConfig", "TernTelemetry",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
        // The serving process `tern proxy` hands over to: no argument parser linked (see
        // Sources/TernProxy/Server/ProxySettings+Encoding.swift), so an idle sidecar stays small.
        .executableTarget(name: "tern-engine", dependencies: ["TernProxy", "TernIO"], swiftSettings: strict),
        // zlib (DEFLATE for HdrHistogram's compressed log encoding): a module map, no C code.
        .systemLibrary(name: "CTernZlib"),
        // tern-load's measurement core (issue 5): schedule, coordinated-omission correction, reports, plots,
        // HdrHistogram logs.
        .target(
            name: "TernLoadCore",
            dependencies: ["CTernZlib", .product(name: "Histogram", package: "hdrhistogram-swift")],
            path: "Tools/tern-load/Core",
            swiftSettings: strict
        ),
        // The load generator (issue 5): HTTP/1.1 over TernIO reactors, closed and open loop.
        .executableTarget(
            name: "tern-load",
            dependencies: [
                "TernLoadCore", "TernIO", "TernHTTP", "TernCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            path: "Tools/tern-load/Sources",
            swiftSettings: strict
        ),
        // What the test targets share: the allocation tests' malloc counter, CI's skip-or-fail switches, and the
        // configuration and request fixtures of the TernConfig and TernProxy tests.
        .target(name: "TernTestSupport", dependencies: ["TernConfig", "TernHTTP"], path: "Tests/TernTestSupport"),
        .testTarget(name: "TernLoadCoreTests", dependencies: ["TernLoadCore", "CTernZlib"]),
        .testTarget(name: "TernCoreTests", dependencies: ["TernCore"]),
        .testTarget(name: "TernIOTests", dependencies: ["TernIO", "TernCore", "CTernLinux", "TernConfig", "TernTestSupport"]),
        .testTarget(name: "TernHTTPTests", dependencies: ["TernHTTP"]),
        .testTarget(name: "TernTelemetryTests", dependencies: ["TernTelemetry", "TernTestSupport"]),
        .testTarget(
            name: "TernProxyTests",
            dependencies: ["TernProxy", "TernIO", "TernHTTP", "TernTelemetry", "TernConfig", "TernCore", "TernTestSupport"]
        ),
        .testTarget(
            name: "TernConfigTests", dependencies: ["TernConfig", "TernHTTP", "TernCore", "TernTestSupport"],
            swiftSettings: [.enableExperimentalFeature("Lifetimes")]
        ),
    ]
)
