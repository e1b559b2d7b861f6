// swift-tools-version: 6.1
//
// Micro-benchmarks for swift-oci-connector, kept in their own package so that the library's
// consumers never resolve the benchmark harness.
//
//     cd Benchmarks && swift package --allow-writing-to-package-directory benchmark

import Foundation
import PackageDescription

// A path dependency is identified by its folder's name, which depends on where the repository was
// cloned; read it from this manifest's own location.
let parentPackage = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().lastPathComponent.lowercased()

let package = Package(
    name: "swift-oci-connector-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "ReferenceParsing",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "OCIReference", package: parentPackage),
            ],
            path: "Benchmarks/ReferenceParsing",
            swiftSettings: [.swiftLanguageMode(.v6)],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "AuthAndRouting",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "OCIReference", package: parentPackage),
                .product(name: "OCIAuth", package: parentPackage),
                .product(name: "OCIConnectorProxy", package: parentPackage),
            ],
            path: "Benchmarks/AuthAndRouting",
            swiftSettings: [.swiftLanguageMode(.v6)],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "BlobForwarding",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "OCIBlobForwarder", package: parentPackage),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Benchmarks/BlobForwarding",
            swiftSettings: [.swiftLanguageMode(.v6)],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
