// swift-tools-version: 6.1
//
// swift-oci-connector: a credential-injecting OCI registry proxy and a client-config generator.
//
// The core modules are library products with as few dependencies as possible, so that other tools
// can import exactly the piece they need. The executables under Examples/ only wire them together.

import PackageDescription

let strictSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "swift-oci-connector",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "OCIReference", targets: ["OCIReference"]),
        .executable(name: "oci-connector-config", targets: ["oci-connector-config"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        // Image references, digests, connector addresses and request routing. No dependencies,
        // not even Foundation: it is on every request's hot path and in every consumer's build.
        .target(
            name: "OCIReference",
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "oci-connector-config",
            dependencies: [
                "OCIReference",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Examples/oci-connector-config",
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "OCIReferenceTests",
            dependencies: ["OCIReference"],
            swiftSettings: strictSettings
        ),
        // Runs the built executables as a user would.
        .testTarget(
            name: "CommandLineTests",
            dependencies: ["oci-connector-config"],
            swiftSettings: strictSettings
        ),
    ]
)
