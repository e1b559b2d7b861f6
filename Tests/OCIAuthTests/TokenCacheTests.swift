import OCIAuth
import OCIReference
import Synchronization
import Testing

/// The cache's timing and sharing rules, with a counting fetch in place of a token server (the
/// end-to-end tests use the real one).
@Suite("Token cache")
struct TokenCacheTests {
    let key = TokenCache.Key(connector: try! ConnectorID(parsing: "team-a/harbor"), scopes: ScopeSet(parsing: "repository:a:pull"))

    final class Counter: Sendable {
        let value = Mutex(0)
        func next() -> Int { value.withLock { $0 += 1; return $0 } }
        var count: Int { value.withLock { $0 } }
    }

    @Test func concurrentRequestsShareOneFetch() async throws {
        let cache = TokenCache()
        let counter = Counter()
        let values = try await withThrowingTaskGroup(of: String.self) { group in
            for _ in 0..<50 {
                group.addTask {
                    try await cache.token(for: key) { _ async throws(AuthError) -> RegistryToken in
                        let n = counter.next()
                        try? await Task.sleep(for: .milliseconds(50))
                        return RegistryToken(value: "token-\(n)", lifetime: .seconds(300))
                    }.value
                }
            }
            return try await group.reduce(into: Set<String>()) { $0.insert($1) }
        }
        #expect(counter.count == 1)
        #expect(values == ["token-1"])
    }

    @Test func refreshesInTheBackgroundBeforeExpiry() async throws {
        // Refresh is due after 0.5 s; the token stays usable until 9.9 s. The wide window keeps
        // the test independent of how busy the machine is.
        let cache = TokenCache(configuration: .init(minimumLifetime: .zero, safetyMargin: .milliseconds(100), refreshFraction: 0.05))
        let counter = Counter()
        let fetch: TokenCache.Fetch = { refresh async throws(AuthError) -> RegistryToken in
            let n = counter.next()
            return RegistryToken(value: "token-\(n)", lifetime: .seconds(10), refreshToken: "refresh-\(n)")
        }
        #expect(try await cache.token(for: key, fetch: fetch).value == "token-1")
        try await Task.sleep(for: .milliseconds(700))  // refresh due, not yet expired
        #expect(try await cache.token(for: key, fetch: fetch).value == "token-1")  // served while refreshing
        for _ in 0..<100 where counter.count < 2 { try await Task.sleep(for: .milliseconds(20)) }
        #expect(counter.count == 2)
        #expect(try await cache.token(for: key, fetch: fetch).value == "token-2")
    }

    @Test func anExpiredTokenIsNeverServed() async throws {
        let cache = TokenCache(configuration: .init(minimumLifetime: .zero, safetyMargin: .milliseconds(50), refreshFraction: 1))
        let counter = Counter()
        let fetch: TokenCache.Fetch = { _ async throws(AuthError) -> RegistryToken in
            RegistryToken(value: "token-\(counter.next())", lifetime: .milliseconds(300))
        }
        #expect(try await cache.token(for: key, fetch: fetch).value == "token-1")
        try await Task.sleep(for: .milliseconds(400))
        #expect(try await cache.token(for: key, fetch: fetch).value == "token-2")
    }

    @Test func minimumLifetimeRaisesShortLifetimes() async throws {
        let cache = TokenCache(configuration: .init(minimumLifetime: .seconds(60)))
        let counter = Counter()
        let fetch: TokenCache.Fetch = { _ async throws(AuthError) -> RegistryToken in
            RegistryToken(value: "token-\(counter.next())", lifetime: .milliseconds(10))
        }
        _ = try await cache.token(for: key, fetch: fetch)
        try await Task.sleep(for: .milliseconds(50))
        #expect(try await cache.token(for: key, fetch: fetch).value == "token-1")
    }

    @Test func invalidationDropsOnlyTheRejectedToken() async throws {
        let cache = TokenCache()
        let counter = Counter()
        let fetch: TokenCache.Fetch = { _ async throws(AuthError) -> RegistryToken in
            RegistryToken(value: "token-\(counter.next())", lifetime: .seconds(300))
        }
        let first = try await cache.token(for: key, fetch: fetch)
        await cache.invalidate(key, rejected: RegistryToken(value: "something-else", lifetime: .seconds(1)))
        #expect(try await cache.token(for: key, fetch: fetch).value == "token-1")
        await cache.invalidate(key, rejected: first)
        #expect(try await cache.token(for: key, fetch: fetch).value == "token-2")
    }

    @Test func aFailedFetchIsNotCached() async throws {
        let cache = TokenCache()
        let counter = Counter()
        let fetch: TokenCache.Fetch = { _ async throws(AuthError) -> RegistryToken in
            if counter.next() == 1 { throw AuthError(.unreachable, "down") }
            return RegistryToken(value: "token", lifetime: .seconds(300))
        }
        await #expect(throws: AuthError.self) { try await cache.token(for: key, fetch: fetch) }
        #expect(try await cache.token(for: key, fetch: fetch).value == "token")
    }

    @Test func tokensAreRedacted() {
        let token = RegistryToken(value: "very-secret-token", lifetime: .seconds(60))
        #expect(!"\(token)".contains("very-secret-token"))
    }
}
