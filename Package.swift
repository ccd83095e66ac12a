// swift-tools-version: 6.2
// Tern: a service-mesh sidecar proxy. Layers (ARCHITECTURE.md §2): C shims → TernCore → TernIO → TernProxy → tern.
import PackageDescription

/// Every Swift target: strict memory safety (unsafe code only in `*+Unsafe.swift`, enforced by
/// Tools/scripts/check-unsafe.sh) and warnings as errors.
let strict: [SwiftSetting] = [
    .strictMemorySafety(),
    .treatAllWarnings(as: .error),
]

/// Targets linked into tern-engine: every function in a section of its own, so that the engine's link can place
/// the code start-up runs next to each other (`engineLinking`). SwiftPM does not rebuild objects when unsafe flags
/// change: after changing these, remove the scratch directory's *.build folders of these targets.
let functionSections: [SwiftSetting] = [.unsafeFlags(["-Xfrontend", "-function-sections"])]
// Release builds of the modules on the request path check exclusive access statically only: the dynamic checks
// (every access to a class's stored property: the engine's slabs, the HTTP/2 session's arenas) cost 10 to 15 % of a
// request's instructions (Benchmarks/README.md, "HTTP/2 and gRPC"). Debug builds, which run every test, keep them,
// so a violation on a tested path still traps.
let releaseExclusivityUnchecked: [SwiftSetting] = [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]

/// How tern-engine, the serving process, is linked, to keep an idle sidecar small (Benchmarks/README.md, "Idle
/// memory"). Most of its idle resident memory is its own file's pages touched at start, and the kernel maps file
/// pages 64 KiB at a time around each one touched (fault-around), so scattered start-up code costs far more than
/// what runs. Measured idle (`tern proxy --http --cores 1`, io_uring, cold start), 8.5-8.7 MiB before these:
/// - lld with Tools/link/tern-engine.order (made by Tools/scripts/startup-order.sh) places the functions start-up
///   runs together, so they fill a few windows instead of touching nearly all of the text: -1.7 to -1.8 MiB;
/// - packed relative relocations (DT_RELR, glibc 2.36) instead of 443 KiB of RELA records that the loader reads
///   once and that then stay resident, and no dynamic symbols for the engine's own 4,700 functions (nothing
///   looks them up: the Swift runtime finds metadata through its sections; gdb and perf read the file's symbol
///   table): -0.4 to -0.7 MiB together.
let engineLinking: [LinkerSetting] = [
    .unsafeFlags([
        "-use-ld=lld",
        "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs",
        "-Xlinker", "--no-export-dynamic",
        "-Xlinker", "--symbol-ordering-file=\(Context.packageDirectory)/Tools/link/tern-engine.order",
        "-Xlinker", "--no-warn-symbol-ordering",
    ])
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
        .library(name: "TernTLS", targets: ["TernTLS"]),
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
        // OpenSSL 3 for TernTLS (headers from libssl-dev; libssl.so.3 loaded when TLS is first needed): macros as
        // functions, the custom BIO, the callbacks.
        .target(name: "CTernOpenSSL", linkerSettings: [.linkedLibrary("dl")]),
        .target(name: "TernCore", swiftSettings: strict + functionSections),
        // I/O-free TLS sessions and contexts over OpenSSL (issue 16).
        .target(name: "TernTLS", dependencies: ["CTernOpenSSL"], swiftSettings: strict + functionSections),
        .target(name: "TernIO", dependencies: ["TernCore", "CTernLinux"], swiftSettings: strict + functionSections),
        // The control plane (issue 19): the mesh CA behind `tern cert`, issuing SPIFFE workload certificates, and
        // the interception rules behind `tern iptables` (TernConfig for its CIDR ranges).
        .target(name: "TernControl", dependencies: ["CTernOpenSSL", "TernCore", "TernTLS", "TernConfig"],
                swiftSettings: strict + functionSections),
        // nghttp2 for TernHTTP's HTTP/2 sessions (issue 17; headers from Debian's libnghttp2-dev): libnghttp2.so.14
        // loaded when the first HTTP/2 session is made, so a sidecar that never sees HTTP/2 does not pay for it.
        .target(name: "CTernNghttp2", linkerSettings: [.linkedLibrary("dl")]),
        // (The HTTP/2 session is a class whose properties nghttp2's callbacks touch one by one.)
        .target(name: "TernHTTP", dependencies: ["TernCore", "CTernNghttp2"],
                swiftSettings: strict + functionSections + releaseExclusivityUnchecked),
        // Metrics shards and exposition, access-log formatting, trace context (issue 6): no system calls.
        .target(name: "TernTelemetry", dependencies: ["TernCore"], swiftSettings: strict + functionSections),
        .target(
            name: "TernProxy", dependencies: ["TernCore", "TernIO", "TernHTTP", "TernConfig", "TernTelemetry", "TernTLS"],
            swiftSettings: strict + functionSections + [.enableExperimentalFeature("Lifetimes")] + releaseExclusivityUnchecked
        ),
        // libyaml (Debian's libyaml-dev) for the config service: a module map, no C code.
        .systemLibrary(name: "CTernYAML"),
        // RE2 (Debian's libre2-dev) for route regexes, as Envoy's safe_regex: a C face over its C++ API (shim.cc,
        // C++17; SwiftPM links libstdc++ for a target with C++ sources).
        .target(name: "CTernRE2", linkerSettings: [.linkedLibrary("re2")]),
        // Istio configuration (issue 4): decode, validate, compile into an immutable RouteTable.
        // A pure library: no system call beyond reading the config files, no reactor code.
        .target(
            name: "TernConfig",
            dependencies: ["TernCore", "CTernYAML", "CTernRE2"],
            swiftSettings: strict + functionSections + [.enableExperimentalFeature("Lifetimes")]
        ),
        .executableTarget(
            name: "tern",
            dependencies: [
                "TernProxy", "TernIO", "TernCore", "TernConfig", "TernTelemetry", "TernTLS", "TernControl", "TernHTTP",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
        // The serving process `tern proxy` hands over to: no argument parser linked (see
        // Sources/TernProxy/Server/ProxySettings+Encoding.swift), so an idle sidecar stays small.
        .executableTarget(
            name: "tern-engine", dependencies: ["TernProxy", "TernIO"],
            swiftSettings: strict + functionSections, linkerSettings: engineLinking
        ),
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
                "TernLoadCore", "TernIO", "TernHTTP", "TernCore", "TernTLS",
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
        .testTarget(name: "TernTLSTests", dependencies: ["TernTLS", "TernTestSupport"]),
        .testTarget(name: "TernControlTests", dependencies: ["TernControl", "TernTLS", "TernConfig"]),
        .testTarget(name: "TernTelemetryTests", dependencies: ["TernTelemetry", "TernTestSupport"]),
        .testTarget(
            name: "TernProxyTests",
            dependencies: ["TernProxy", "TernIO", "TernHTTP", "TernTelemetry", "TernConfig", "TernCore", "TernTestSupport"]
        ),
        .testTarget(
            name: "TernConfigTests", dependencies: ["TernConfig", "TernHTTP", "TernCore", "TernTestSupport"],
            swiftSettings: [.enableExperimentalFeature("Lifetimes")]
        ),
    ],
    cxxLanguageStandard: .cxx17
)
