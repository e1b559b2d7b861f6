import CoreMetrics
public import OCIReference
import Synchronization

/// Upstream bearer tokens, kept server-side and shared by every request that needs the same
/// scopes of the same connector.
///
/// - Concurrent requests for one key share one token request (single flight).
/// - A token is used until `lifetime − safety margin`; after ``Configuration/refreshFraction`` of
///   its lifetime a background refresh starts while the current token keeps serving, so long
///   operations never meet an expired token and never wait for a refresh.
/// - The lifetime the token server states is believed, however short: a token used past it is
///   refused, and an upload body refused that way cannot be sent again. (Docker and containerd
///   raise lifetimes under 60 seconds to 60, as the token spec's compatibility note allows; a
///   server that means a shorter one then fails their uploads.) ``Configuration/minimumLifetime``
///   can still raise short lifetimes, for a server known to understate them.
/// - It counts, per connector, through swift-metrics: tokens served from the cache
///   (`oci_connector_upstream_token_cache_hits_total`) and token requests by result
///   (`oci_connector_upstream_token_requests_total`, `result` `ok` or `error`).
/// - Time is read from the clock the cache was created with, the continuous clock unless
///   ``init(configuration:clock:)`` names another. A lifetime counts from the token's
///   ``RegistryToken/receivedAt``: the age the token has on arrival, on the continuous clock,
///   carries over to the cache's clock.
public actor TokenCache {
    /// Timing policy.
    public struct Configuration: Sendable {
        /// Lifetimes below this are raised to it; none by default.
        public var minimumLifetime: Duration
        /// A token is not handed out closer than this to its expiry (at most a fifth of its life).
        public var safetyMargin: Duration
        /// The share of the lifetime after which a background refresh starts.
        public var refreshFraction: Double

        /// Creates a policy.
        public init(
            minimumLifetime: Duration = .zero, safetyMargin: Duration = .seconds(30), refreshFraction: Double = 0.75
        ) {
            self.minimumLifetime = minimumLifetime
            self.safetyMargin = safetyMargin
            self.refreshFraction = refreshFraction
        }
    }

    /// What a token is cached under: the connector (whose credentials obtained it) and the
    /// normalised scope set.
    public struct Key: Hashable, Sendable, CustomStringConvertible {
        /// The connector whose credentials obtained the token.
        public let connector: ConnectorID
        /// The scopes the token was asked for.
        public let scopes: ScopeSet

        /// Creates a key.
        public init(connector: ConnectorID, scopes: ScopeSet) {
            self.connector = connector
            self.scopes = scopes
        }

        public var description: String { "\(connector) [\(scopes)]" }
    }

    /// Gets a new token; given the refresh token of the one it replaces, if any.
    public typealias Fetch = @Sendable (_ refreshToken: String?) async throws(AuthError) -> RegistryToken

    /// Instants are kept as time since the cache was created, on its clock.
    private struct Cached {
        var token: RegistryToken
        var refreshAt: Duration
        var usableUntil: Duration
    }

    private let configuration: Configuration
    /// The cache's clock, read as the time since the cache was created: that holds the instants
    /// of any clock without making the cache generic.
    private nonisolated let elapsed: @Sendable () -> Duration
    /// Behind a lock rather than actor state, so that ``readyToken(for:)`` needs no hop.
    private nonisolated let tokens = Mutex<[Key: Cached]>([:])
    private var inFlight: [Key: Task<RegistryToken, any Error>] = [:]
    /// Bumped when a connector's tokens are dropped: a token asked for before is not kept.
    private var generations: [ConnectorID: Int] = [:]
    /// The cache-hit counter of each connector, made once: hits are counted on every request.
    private nonisolated let hitCounters = Mutex<[ConnectorID: Counter]>([:])

    /// Creates an empty cache that tells time by the continuous clock.
    public init(configuration: Configuration = Configuration()) {
        self.init(configuration: configuration, clock: ContinuousClock())
    }

    /// Creates an empty cache that tells time by `clock`.
    ///
    /// Refresh and expiry are decided by reading `clock` when a token is asked for; the cache
    /// never sleeps on it. A clock that only moves when told to makes the timing rules testable
    /// without waiting:
    ///
    /// ```swift
    /// let cache = TokenCache(clock: manualClock)
    /// _ = try await cache.token(for: key, fetch: fetch)  // lives 300 s: refreshed after 225 s
    /// manualClock.advance(by: .seconds(230))
    /// _ = try await cache.token(for: key, fetch: fetch)  // served, and refreshed in the background
    /// ```
    ///
    /// - Parameters:
    ///   - configuration: the timing policy.
    ///   - clock: where the cache reads the time; its instants need not be those of the
    ///     continuous clock, on which tokens are stamped (see ``RegistryToken/receivedAt``).
    public init<C: Clock>(configuration: Configuration = Configuration(), clock: C) where C.Duration == Duration {
        self.configuration = configuration
        let start = clock.now
        self.elapsed = { start.duration(to: clock.now) }
    }

    /// A token for `key`: cached, shared with a request already under way, or fetched.
    public func token(for key: Key, fetch: @escaping Fetch) async throws(AuthError) -> RegistryToken {
        let now = elapsed()
        if let cached = tokens.withLock({ $0[key] }) {
            if now < cached.refreshAt {
                countHit(key)
                return cached.token
            }
            if now < cached.usableUntil {
                // Due for refresh but still good: refresh in the background, serve this one.
                if inFlight[key] == nil { _ = start(key, refreshToken: cached.token.refreshToken, fetch: fetch) }
                countHit(key)
                return cached.token
            }
            tokens.withLock { $0[key] = nil }
        }
        let task = inFlight[key] ?? start(key, refreshToken: nil, fetch: fetch)
        do {
            return try await task.value
        } catch let error as AuthError {
            throw error
        } catch {
            throw AuthError(.unexpectedResponse, "getting a token failed: \(error)")
        }
    }

    /// The cached token for `key` if it is not yet due for refresh, without waiting: for callers
    /// on an event loop that cannot suspend. `nil` means ask ``token(for:fetch:)``.
    public nonisolated func readyToken(for key: Key) -> RegistryToken? {
        let now = elapsed()
        let token = tokens.withLock { tokens -> RegistryToken? in
            guard let cached = tokens[key], now < cached.refreshAt else { return nil }
            return cached.token
        }
        if token != nil { countHit(key) }
        return token
    }

    private nonisolated func countHit(_ key: Key) {
        let counter = hitCounters.withLock { counters in
            if let counter = counters[key.connector] { return counter }
            let counter = Counter(
                label: "oci_connector_upstream_token_cache_hits_total", dimensions: [("connector", key.connector.description)])
            counters[key.connector] = counter
            return counter
        }
        counter.increment()
    }

    private static func countRequest(_ key: Key, ok: Bool) {
        Counter(
            label: "oci_connector_upstream_token_requests_total",
            dimensions: [("connector", key.connector.description), ("result", ok ? "ok" : "error")]
        ).increment()
    }

    /// Forgets the token for `key` if it is still `rejected` (the registry refused it), so the
    /// next request fetches a new one. A token fetched meanwhile is kept.
    public func invalidate(_ key: Key, rejected: RegistryToken) {
        tokens.withLock { tokens in
            if tokens[key]?.token.value == rejected.value { tokens[key] = nil }
        }
    }

    /// Forgets every token.
    public func removeAll() {
        tokens.withLock { $0.removeAll() }
    }

    /// Forgets the tokens of `connector`: its credentials changed, or it is gone. A request for
    /// one under way still completes, but its token is not kept.
    public func removeAll(connector: ConnectorID) {
        tokens.withLock { tokens in tokens = tokens.filter { $0.key.connector != connector } }
        for key in inFlight.keys where key.connector == connector { inFlight[key] = nil }
        generations[connector, default: 0] += 1
    }

    /// The number of tokens held.
    public var count: Int { tokens.withLock { $0.count } }

    private func start(_ key: Key, refreshToken: String?, fetch: @escaping Fetch) -> Task<RegistryToken, any Error> {
        let generation = generations[key.connector, default: 0]
        let task = Task<RegistryToken, any Error> {
            do {
                let token = try await fetch(refreshToken)
                Self.countRequest(key, ok: true)
                self.store(token, for: key, generation: generation)
                return token
            } catch {
                Self.countRequest(key, ok: false)
                self.finishFailed(key)
                throw error
            }
        }
        inFlight[key] = task
        return task
    }

    private func store(_ token: RegistryToken, for key: Key, generation: Int) {
        guard generation == generations[key.connector, default: 0] else { return }  // Dropped meanwhile.
        let lifetime = max(token.lifetime, configuration.minimumLifetime)
        let margin = min(configuration.safetyMargin, lifetime / 5)
        // The token was stamped on the continuous clock when its response arrived; what has passed
        // since then has passed on the cache's clock too, whichever clock that is.
        let receivedAt = elapsed() - max(.zero, token.receivedAt.duration(to: .now))
        let usableUntil = receivedAt + lifetime - margin
        let cached = Cached(
            token: token,
            refreshAt: min(receivedAt + lifetime * configuration.refreshFraction, usableUntil),
            usableUntil: usableUntil)
        tokens.withLock { $0[key] = cached }
        inFlight[key] = nil
    }

    private func finishFailed(_ key: Key) {
        inFlight[key] = nil
    }
}
