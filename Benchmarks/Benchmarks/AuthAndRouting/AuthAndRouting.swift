import Benchmark
import OCIAuth
import OCIConnectorProxy
import OCIReference

// The per-request work of the proxy besides moving bytes: reading challenges, normalising scopes,
// finding a cached token, and rewriting locations.

private let challenge =
    #"Bearer realm="https://harbor.example.com/service/token",service="harbor-registry",scope="repository:team/app:pull,push""#
private let scopes = "repository:team/app:push repository:team/base:pull repository:team/app:pull registry:catalog:*"

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.throughput, .wallClock, .mallocCountTotal],
        scalingFactor: .kilo,
        maxDuration: .seconds(2),
        maxIterations: 1_000,
        // Thresholds/ holds the p90 of allocations per 1000 operations; one more allocation per
        // operation fails `bash Benchmarks/thresholds.sh check`.
        thresholds: [.mallocCountTotal: .init(absolute: [.p90: 1_000])]
    )

    Benchmark("ParseBearerChallenge") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try AuthChallenge.parse(challenge))
        }
    }

    // Set storage grows differently with each hash seed: thresholds.sh fixes the seed, and a few
    // allocations more or less are allowed all the same.
    let setTolerance = Benchmark.Configuration(thresholds: [.mallocCountTotal: .init(absolute: [.p90: 5_000])])
    Benchmark("NormaliseScopeSet", configuration: setTolerance) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(ScopeSet(parsing: scopes))
        }
    }

    let route = try! RegistryRoute(path: "/v2/team/app/blobs/uploads/")
    Benchmark("ScopeHintsForAMount", configuration: setTolerance) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(ScopeHints.scopes(method: "POST", route: route, mountFrom: "team/base"))
        }
    }

    let cache = TokenCache()
    let key = TokenCache.Key(
        connector: try! ConnectorID(parsing: "team-a/harbor"), scopes: ScopeSet(parsing: "repository:team/app:pull"))
    Benchmark("TokenCacheHit") { benchmark in
        _ = try await cache.token(for: key) { _ async throws(AuthError) -> RegistryToken in
            RegistryToken(value: "token", lifetime: .seconds(3600))
        }
        for _ in benchmark.scaledIterations {
            blackHole(
                try await cache.token(for: key) { _ async throws(AuthError) -> RegistryToken in
                    RegistryToken(value: "other", lifetime: .seconds(3600))
                })
        }
    }

    let rewriter = HeaderRewriter(
        clientOrigin: "http://proxy.example:8080", repositoryPrefix: "namespaces/team-a/connectors/harbor",
        upstream: try! RegistryAddress(parsing: "https://harbor.example.com"))
    let location =
        "https://harbor.example.com/v2/team/app/blobs/uploads/4f1c2d3e-aaaa-bbbb-cccc-123456789abc?_state=abcdefghijklmnop"
    Benchmark("RewriteUploadLocation") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(rewriter.location(location))
        }
    }
}
