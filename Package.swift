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

// Executables, tests and test support are not imported by anyone: they import freely.
let testSettings: [SwiftSetting] = [.swiftLanguageMode(.v6), .enableUpcomingFeature("ExistentialAny")]

let package = Package(
    name: "swift-oci-connector",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "OCIReference", targets: ["OCIReference"]),
        .library(name: "OCIConnectors", targets: ["OCIConnectors"]),
        .library(name: "OCIAuth", targets: ["OCIAuth"]),
        .library(name: "OCIProxyToken", targets: ["OCIProxyToken"]),
        .library(name: "OCIWorkloadIdentity", targets: ["OCIWorkloadIdentity"]),
        .library(name: "OCIClientConfig", targets: ["OCIClientConfig"]),
        .library(name: "OCIBlobForwarder", targets: ["OCIBlobForwarder"]),
        .library(name: "OCIConnectorProxy", targets: ["OCIConnectorProxy"]),
        .executable(name: "oci-connector-proxy", targets: ["oci-connector-proxy"]),
        .executable(name: "oci-connector-config", targets: ["oci-connector-config"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/vapor/jwt-kit", from: "5.8.0"),
    ],
    targets: [
        // Image references, digests, connector addresses and request routing. No dependencies,
        // not even Foundation: it is on every request's hot path and in every consumer's build.
        .target(
            name: "OCIReference",
            swiftSettings: strictSettings
        ),
        // Connectors and their credentials, from Kubernetes-style YAML.
        .target(
            name: "OCIConnectors",
            dependencies: ["OCIReference", .product(name: "Yams", package: "Yams")],
            swiftSettings: strictSettings
        ),
        // Upstream registry authentication: challenges, scopes, token exchange and cache.
        .target(
            name: "OCIAuth",
            dependencies: [
                "OCIReference", "OCIConnectors",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            swiftSettings: strictSettings
        ),
        // Proxy tokens: Ed25519-signed JWTs scoped to connectors, actions and repositories.
        .target(
            name: "OCIProxyToken",
            dependencies: ["OCIReference", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: strictSettings
        ),
        // Kubernetes service account tokens, verified offline against the clusters' keys
        // (jwt-kit for the signatures).
        .target(
            name: "OCIWorkloadIdentity",
            dependencies: [.product(name: "JWTKit", package: "jwt-kit")],
            swiftSettings: strictSettings
        ),
        // Renders what a workload mounts: docker, BuildKit, containers, containerd, Kubernetes.
        .target(
            name: "OCIClientConfig",
            dependencies: ["OCIReference", "OCIConnectors"],
            swiftSettings: strictSettings
        ),
        // Streams bodies between the workload and the upstream, buffer by buffer.
        .target(
            name: "OCIBlobForwarder",
            dependencies: [
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: strictSettings
        ),
        // The proxy engine: routing, client authentication, header rewriting, forwarding.
        .target(
            name: "OCIConnectorProxy",
            dependencies: [
                "OCIReference", "OCIConnectors", "OCIAuth", "OCIProxyToken", "OCIWorkloadIdentity", "OCIBlobForwarder",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                // The metrics API only: the executable picks the backend (Prometheus).
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "oci-connector-proxy",
            dependencies: [
                "OCIConnectorProxy", "OCIConnectors", "OCIProxyToken", "OCIReference", "OCIWorkloadIdentity",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            path: "Examples/oci-connector-proxy",
            swiftSettings: testSettings
        ),
        .executableTarget(
            name: "oci-connector-config",
            dependencies: [
                "OCIReference", "OCIConnectors", "OCIAuth", "OCIProxyToken", "OCIClientConfig",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Examples/oci-connector-config",
            swiftSettings: testSettings
        ),
        .testTarget(
            name: "OCIReferenceTests",
            dependencies: ["OCIReference"],
            swiftSettings: testSettings
        ),
        .testTarget(
            name: "OCIConnectorsTests",
            dependencies: ["OCIConnectors"],
            swiftSettings: testSettings
        ),
        .testTarget(
            name: "OCIAuthTests",
            dependencies: [
                "OCIAuth", "OCIConnectors", "OCITestSupport",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: testSettings
        ),
        .testTarget(
            name: "OCIWorkloadIdentityTests",
            dependencies: ["OCIWorkloadIdentity", "OCITestSupport"],
            swiftSettings: testSettings
        ),
        .testTarget(
            name: "OCIClientConfigTests",
            dependencies: ["OCIClientConfig", "OCIConnectors", "OCIReference"],
            exclude: ["Golden"],
            swiftSettings: testSettings
        ),
        .testTarget(
            name: "OCIConnectorProxyTests",
            dependencies: [
                "OCIConnectorProxy", "OCIConnectors", "OCIProxyToken", "OCIReference", "OCIBlobForwarder", "OCITestSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: testSettings
        ),
        // Real registries (docker-registry) and a token issuer for the end-to-end tests.
        .target(
            name: "OCITestSupport",
            dependencies: [
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/OCITestSupport",
            swiftSettings: testSettings
        ),
        // Runs the built executables as a user would.
        .testTarget(
            name: "CommandLineTests",
            dependencies: ["oci-connector-config", "oci-connector-proxy", "OCITestSupport"],
            swiftSettings: testSettings
        ),
    ]
)
