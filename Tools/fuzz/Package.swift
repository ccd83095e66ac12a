// swift-tools-version: 6.2
// Fuzz targets for Tern's parsers of untrusted input (libFuzzer through `swift build --sanitize=fuzzer`).
// A separate package, as swift-nio-http2 arranges its FuzzTesting, so the main build never links libFuzzer.
// Run: bash Tools/scripts/fuzz.sh (bounded in time; the corpus and any crashers live in Tools/fuzz/corpus).
import PackageDescription

let package = Package(
    name: "TernFuzz",
    dependencies: [.package(name: "tern", path: "../..")],
    targets: [
        .executableTarget(
            name: "FuzzHTTP1",
            dependencies: [.product(name: "TernHTTP", package: "tern")],
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]
        ),
        .executableTarget(
            name: "FuzzClientHello",
            dependencies: [.product(name: "TernTLS", package: "tern")],
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]
        ),
        .executableTarget(
            name: "FuzzHTTP2",
            dependencies: [.product(name: "TernHTTP", package: "tern")],
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]
        ),
    ]
)
