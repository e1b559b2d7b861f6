import Benchmark
import OCIReference

// Parsing sits on the proxy's request path and in every config render: it should cost less than
// naively splitting the string on "/" (about 1 M/s and 3 allocations on the reference machine).

private let short = "ubuntu:22.04"
private let typical = "harbor.example.com/team/app:v1"
private let long = "registry.example.com:5000/platform/build-tools/ci/images/kaniko-executor-debug:v1.23.2-debug"
private let digested = "ghcr.io/org/repo@sha256:" + String(repeating: "4f", count: 32)
private let tagAndDigest = "quay.io/prometheus/node-exporter:v1.7.0@sha256:" + String(repeating: "ab", count: 32)
private let proxyPath = "/v2/namespaces/team-a/connectors/harbor/team/app/blobs/sha256:" + String(repeating: "0f", count: 32)

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.throughput, .wallClock, .mallocCountTotal, .instructions],
        scalingFactor: .kilo,
        maxDuration: .seconds(2),
        maxIterations: 1_000,
        // Thresholds/ holds the p90 of allocations per 1000 operations; one more allocation per
        // operation fails `bash Benchmarks/thresholds.sh check`.
        thresholds: [.mallocCountTotal: .init(absolute: [.p90: 1_000])]
    )

    for (label, input) in [
        ("short", short), ("typical", typical), ("long", long), ("digest", digested), ("tag+digest", tagAndDigest),
    ] {
        Benchmark("Parse-\(label)") { benchmark in
            for _ in benchmark.scaledIterations {
                blackHole(try ImageReference(parsing: input))
            }
        }
    }

    Benchmark("NaiveSplitOnSlash") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(typical.split(separator: "/"))
        }
    }

    Benchmark("RouteProxyBlobPath") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try ConnectorRoute(pathFormPath: proxyPath))
        }
    }

    let address = try! ConnectorProxyAddress(
        connector: ConnectorID(parsing: "team-a/harbor"),
        upstream: RegistryAddress(parsing: "https://harbor.example.com"),
        proxy: "proxy.example:8080")
    let reference = try! ImageReference(parsing: typical)
    Benchmark("RewriteForPathForm") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try address.rewrite(reference))
        }
    }
}
