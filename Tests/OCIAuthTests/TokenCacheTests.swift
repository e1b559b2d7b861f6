import OCIAuth
import OCIReference
import Synchronization
import Testing

/// The cache's timing and sharing rules, on a clock the tests move by hand, with a counting fetch
/// in place of a token server (the end-to-end tests use the real one).
@Suite("Token cache")
struct TokenCacheTests {
    let key = TokenCache.Key(
        connector: try! ConnectorID(parsing: "team-a/harbor"), scopes: ScopeSet(parsing: "repository:a:pull"))

    final class Counter: Sendable {
        let value = Mutex(0)
        func next() -> Int {
            value.withLock {
                $0 += 1; return $0
            }
        }
        var count: Int { value.withLock { $0 } }
    }

    @Test func concurrentRequestsShareOneFetch() async throws {
        let cache = TokenCache()
        let counter = Counter()
        let gate = Gate()
        let (arrivals, arrived) = AsyncStream.makeStream(of: Void.self)
        let fetch: TokenCache.Fetch = { _ async throws(AuthError) -> RegistryToken in
            let n = counter.next()
            await gate.wait()
            return RegistryToken(value: "token-\(n)", lifetime: .seconds(300))
        }
        let values = try await withThrowingTaskGroup(of: String.self) { group in
            for _ in 0..<50 {
                group.addTask {
                    arrived.yield()
                    return try await cache.token(for: key, fetch: fetch).value
                }
            }
            // The first fetch is held until every task has set off with its request: a request
            // that did not join it would fetch again.
            for await _ in arrivals.prefix(50) {}
            gate.open()
            return try await group.reduce(into: Set<String>()) { $0.insert($1) }
        }
        #expect(counter.count == 1)
        #expect(values == ["token-1"])
    }

    @Test func refreshesInTheBackgroundBeforeExpiry() async throws {
        // A 100 s token: refresh due after 75 s, usable until 80 s (the margin is at most a fifth
        // of the lifetime).
        let clock = ManualClock()
        let cache = TokenCache(
            configuration: .init(minimumLifetime: .zero, safetyMargin: .seconds(30), refreshFraction: 0.75), clock: clock)
        let counter = Counter()
        let refreshTokens = Mutex<[String?]>([])
        let gate = Gate()
        let fetch: TokenCache.Fetch = { refresh async throws(AuthError) -> RegistryToken in
            let n = counter.next()
            refreshTokens.withLock { $0.append(refresh) }
            if n > 1 { await gate.wait() }
            return RegistryToken(value: "token-\(n)", lifetime: .seconds(100), refreshToken: "refresh-\(n)")
        }
        #expect(try await cache.token(for: key, fetch: fetch).value == "token-1")
        clock.advance(by: .seconds(74))
        #expect(cache.readyToken(for: key)?.value == "token-1")
        #expect(try await cache.token(for: key, fetch: fetch).value == "token-1")
        #expect(counter.count == 1)

        // Due, not expired: the refresh is held, and the current token is served meanwhile by
        // every request, none waiting for the refresh.
        clock.advance(by: .seconds(2))
        #expect(cache.readyToken(for: key) == nil)
        let served = try await returnsBeforeOpening(gate) {
            [try await cache.token(for: key, fetch: fetch).value, try await cache.token(for: key, fetch: fetch).value]
        }
        #expect(served == ["token-1", "token-1"], "a request waited for the refresh")
        #expect(try await eventually { counter.count == 2 }, "the refresh did not start")
        gate.open()
        #expect(try await eventually { cache.readyToken(for: key)?.value == "token-2" }, "the refresh did not land")
        #expect(try await cache.token(for: key, fetch: fetch).value == "token-2")
        #expect(counter.count == 2, "a refresh was started twice")
        #expect(refreshTokens.withLock { $0 } == [nil, "refresh-1"])
    }

    @Test func anExpiredTokenIsNeverServed() async throws {
        // A 100 s token: refresh due after 50 s, usable until 80 s.
        let clock = ManualClock()
        let cache = TokenCache(
            configuration: .init(minimumLifetime: .zero, safetyMargin: .seconds(30), refreshFraction: 0.5), clock: clock)
        let counter = Counter()
        let fetch: TokenCache.Fetch = { _ async throws(AuthError) -> RegistryToken in
            RegistryToken(value: "token-\(counter.next())", lifetime: .seconds(100))
        }
        #expect(try await cache.token(for: key, fetch: fetch).value == "token-1")
        clock.advance(by: .seconds(80))
        #expect(cache.readyToken(for: key) == nil)
        #expect(try await cache.token(for: key, fetch: fetch).value == "token-2")
        #expect(counter.count == 2)
    }

    @Test func minimumLifetimeRaisesShortLifetimes() async throws {
        // 10 ms raised to 60 s: refresh due after 45 s, usable until 48 s.
        let clock = ManualClock()
        let cache = TokenCache(configuration: .init(minimumLifetime: .seconds(60)), clock: clock)
        let counter = Counter()
        let fetch: TokenCache.Fetch = { _ async throws(AuthError) -> RegistryToken in
            RegistryToken(value: "token-\(counter.next())", lifetime: .milliseconds(10))
        }
        _ = try await cache.token(for: key, fetch: fetch)
        clock.advance(by: .seconds(44))
        #expect(try await cache.token(for: key, fetch: fetch).value == "token-1")
        clock.advance(by: .seconds(4))
        #expect(try await cache.token(for: key, fetch: fetch).value == "token-2")
    }

    /// What a request gets from the cache.
    enum Stage: Sendable {
        /// The cached token, with no refresh.
        case fresh
        /// The cached token, while a refresh runs in the background.
        case refreshing
        /// A new token, waited for.
        case expired
    }

    /// Each stage's first instant and the one a second before, for a token of `lifetime` under
    /// `configuration`. A token reaches the cache microseconds old, on the system clock, and that
    /// age counts against it: the instants before a boundary keep a second in hand.
    static let stages: [(lifetime: Duration, configuration: TokenCache.Configuration, at: Duration, stage: Stage)] = [
        // The defaults: refresh after 75 % of 300 s, usable until 30 s before the end.
        (.seconds(300), .init(), .seconds(224), .fresh),
        (.seconds(300), .init(), .seconds(225), .refreshing),
        (.seconds(300), .init(), .seconds(269), .refreshing),
        (.seconds(300), .init(), .seconds(270), .expired),
        // A floor of 60 s raises 10 s to it; its fifth (12 s) is less than the margin.
        (.seconds(10), .init(minimumLifetime: .seconds(60)), .seconds(44), .fresh),
        (.seconds(10), .init(minimumLifetime: .seconds(60)), .seconds(45), .refreshing),
        (.seconds(10), .init(minimumLifetime: .seconds(60)), .seconds(47), .refreshing),
        (.seconds(10), .init(minimumLifetime: .seconds(60)), .seconds(48), .expired),
        // The defaults have no floor: the margin is a fifth of 10 s.
        (.seconds(10), .init(), .seconds(6.5), .fresh),
        (.seconds(10), .init(), .seconds(7.5), .refreshing),
        (.seconds(10), .init(), .seconds(8), .expired),
        // A refresh due at the end of the lifetime: the margin comes first, so none runs in the
        // background.
        (.seconds(300), .init(refreshFraction: 1), .seconds(269), .fresh),
        (.seconds(300), .init(refreshFraction: 1), .seconds(270), .expired),
    ]

    @Test(arguments: stages)
    func timingBoundaries(lifetime: Duration, configuration: TokenCache.Configuration, at instant: Duration, stage: Stage)
        async throws
    {
        let clock = ManualClock()
        let cache = TokenCache(configuration: configuration, clock: clock)
        let counter = Counter()
        let fetch: TokenCache.Fetch = { _ async throws(AuthError) -> RegistryToken in
            RegistryToken(value: "token-\(counter.next())", lifetime: lifetime)
        }
        _ = try await cache.token(for: key, fetch: fetch)
        clock.advance(by: instant)
        let ready = cache.readyToken(for: key)?.value
        let served = try await cache.token(for: key, fetch: fetch).value
        switch stage {
        case .fresh:
            #expect(ready == "token-1")
            #expect(served == "token-1")
            #expect(counter.count == 1)
        case .refreshing:
            #expect(ready == nil)
            #expect(served == "token-1")
            #expect(try await eventually { counter.count == 2 }, "no refresh started")
        case .expired:
            #expect(ready == nil)
            #expect(served == "token-2")
            #expect(counter.count == 2)
        }
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

// MARK: - Test clock and events

/// A clock that stands still until a test moves it.
final class ManualClock: Clock, Sendable {
    struct Instant: InstantProtocol {
        var offset: Duration

        func advanced(by duration: Duration) -> Instant { Instant(offset: offset + duration) }
        func duration(to other: Instant) -> Duration { other.offset - offset }
        static func < (lhs: Instant, rhs: Instant) -> Bool { lhs.offset < rhs.offset }
    }

    private struct State {
        var now = Instant(offset: .zero)
        var sleepers: [Int: (deadline: Instant, continuation: CheckedContinuation<Void, any Error>)] = [:]
        var nextSleeper = 0
    }

    private let state = Mutex(State())

    var now: Instant { state.withLock { $0.now } }
    var minimumResolution: Duration { .zero }

    /// Moves the clock on, waking the sleepers whose deadline it reaches.
    func advance(by duration: Duration) {
        let woken = state.withLock { state in
            state.now = state.now.advanced(by: duration)
            let due = state.sleepers.filter { $0.value.deadline <= state.now }
            for id in due.keys { state.sleepers[id] = nil }
            return due.values.map { $0.continuation }
        }
        for continuation in woken { continuation.resume() }
    }

    func sleep(until deadline: Instant, tolerance: Duration? = nil) async throws {
        let id = state.withLock { state in
            defer { state.nextSleeper += 1 }
            return state.nextSleeper
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let outcome: Result<Void, any Error>? = state.withLock { state in
                    if Task.isCancelled { return .failure(CancellationError()) }
                    if deadline <= state.now { return .success(()) }
                    state.sleepers[id] = (deadline, continuation)
                    return nil
                }
                if let outcome { continuation.resume(with: outcome) }
            }
        } onCancel: {
            state.withLock { $0.sleepers.removeValue(forKey: id) }?.continuation.resume(throwing: CancellationError())
        }
    }
}

/// A one-way gate: tasks wait at it until it is opened.
final class Gate: Sendable {
    private let state = Mutex<(open: Bool, waiting: [CheckedContinuation<Void, Never>])>((false, []))

    func wait() async {
        await withCheckedContinuation { continuation in
            let open = state.withLock { state in
                if !state.open { state.waiting.append(continuation) }
                return state.open
            }
            if open { continuation.resume() }
        }
    }

    func open() {
        let waiting = state.withLock { state in
            state.open = true
            defer { state.waiting = [] }
            return state.waiting
        }
        for continuation in waiting { continuation.resume() }
    }
}

/// What `body` returns if it returns within `timeout` while `gate` stays shut, `nil` if it does not
/// (the gate is then opened, so that a body waiting at it ends instead of hanging the test).
func returnsBeforeOpening<Value: Sendable>(
    _ gate: Gate, within timeout: Duration = .seconds(30), _ body: @escaping @Sendable () async throws -> Value
) async throws -> Value? {
    let returned = Mutex(false)
    let task = Task {
        let value = try await body()
        returned.withLock { $0 = true }
        return value
    }
    let inTime = try await eventually(within: timeout) { returned.withLock { $0 } }
    if !inTime { gate.open() }
    let value = try await task.value
    return inTime ? value : nil
}

/// Whether `condition` holds within `timeout`, asked every few milliseconds: for what a task of
/// the cache's own does, which nothing signals.
func eventually(within timeout: Duration = .seconds(10), _ condition: () async throws -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + timeout
    while !(try await condition()) {
        guard ContinuousClock.now < deadline else { return false }
        try await Task.sleep(for: .milliseconds(5))
    }
    return true
}
