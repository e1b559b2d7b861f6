// swift-tools-version: 6.1
//
// The floor under a manifest relay on SwiftNIO: servers that do only what the proxy's manifest
// path cannot avoid, measured beside nginx and the proxy by `run.py` (Documentation/Performance.md,
// "What a leaner HTTP layer would gain"). Its own package, so the library never depends on it.

import PackageDescription

let package = Package(
    name: "relay-floor",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2")
    ],
    targets: [
        .executableTarget(
            name: "relay-floor",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        )
    ]
)
