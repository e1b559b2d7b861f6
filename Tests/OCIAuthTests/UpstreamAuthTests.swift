import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import OCIAuth
import OCIConnectors
import OCIReference
import OCITestSupport
import Testing

/// Authentication against real CNCF Distribution registries: anonymous, htpasswd Basic, and
/// token auth whose JWTs the registry verifies.
@Suite("Upstream authentication against real registries", .serialized)
struct UpstreamAuthTests {
    static let httpClient = try! UpstreamHTTPClient.make()

    static func upstream(
        _ registry: TestRegistry, _ user: (String, String)?, name: String = "up", parameters: [String: String] = [:],
        tokens: TokenCache = TokenCache()
    ) throws -> UpstreamClient {
        let connector = Connector(
            id: try ConnectorID(namespace: "team-a", name: name),
            address: try RegistryAddress(parsing: registry.url),
            credentials: user.map { RegistryCredentials(username: $0.0, password: $0.1) },
            parameters: parameters)
        return UpstreamClient(connector: connector, httpClient: httpClient, tokens: tokens)
    }

    /// Pushes a small image through `client` (monolithic blob uploads and a manifest PUT).
    static func push(_ image: TestImage, to repository: String, tag: String, with client: UpstreamClient) async throws {
        let pushScopes: ScopeSet = [.repository(repository, actions: ["pull", "push"])]
        for blob in [image.config, image.layer] {
            var start = HTTPClientRequest(url: client.url("/v2/\(repository)/blobs/uploads/"))
            start.method = .POST
            let started = try await client.execute(start, scopes: pushScopes, replayable: true)
            _ = try await started.body.collect(upTo: 1 << 16)
            try #require(started.status == .accepted, "upload POST answered \(started.status)")
            let location = try #require(started.headers.first(name: "Location"))
            let url =
                (location.hasPrefix("/") ? client.url(location) : location)
                + (location.contains("?") ? "&" : "?") + "digest=\(sha256Digest(blob))"
            var finish = HTTPClientRequest(url: url)
            finish.method = .PUT
            finish.headers.add(name: "Content-Type", value: "application/octet-stream")
            finish.headers.add(name: "Content-Length", value: "\(blob.count)")
            finish.body = .bytes(ByteBuffer(bytes: blob))
            let finished = try await client.execute(finish, scopes: pushScopes, replayable: true)
            _ = try await finished.body.collect(upTo: 1 << 16)
            try #require(finished.status == .created, "upload PUT answered \(finished.status)")
        }
        var request = HTTPClientRequest(url: client.url("/v2/\(repository)/manifests/\(tag)"))
        request.method = .PUT
        request.headers.add(name: "Content-Type", value: TestImage.manifestMediaType)
        request.body = .bytes(ByteBuffer(bytes: image.manifest))
        let response = try await client.execute(request, scopes: pushScopes, replayable: true)
        _ = try await response.body.collect(upTo: 1 << 16)
        try #require(response.status == .created, "manifest PUT answered \(response.status)")
    }

    static func tagList(_ repository: String, with client: UpstreamClient) async throws -> (HTTPResponseStatus, String) {
        var request = HTTPClientRequest(url: client.url("/v2/\(repository)/tags/list"))
        request.method = .GET
        let response = try await client.execute(request, scopes: [.repository(repository, actions: ["pull"])], replayable: true)
        let body = try await response.body.collect(upTo: 1 << 16)
        return (response.status, String(buffer: body))
    }

    static func expectFailure(_ code: AuthError.Code, containing text: String? = nil, _ body: () async throws -> Void) async {
        do {
            try await body()
            Issue.record("expected \(code), but it succeeded")
        } catch let error as AuthError {
            #expect(error.code == code, "\(error)")
            if let text { #expect(error.reason.contains(text), "\(error.reason)") }
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    // MARK: - Anonymous

    @Test func anonymousRegistry() async throws {
        let registry = try await SharedRegistries.shared.anonymous()
        let client = try Self.upstream(registry, nil)
        #expect(try await client.method() == .anonymous)
        try await Self.push(TestImage(), to: "anon/app", tag: "v1", with: client)
        let (status, body) = try await Self.tagList("anon/app", with: client)
        #expect(status == .ok && body.contains("v1"))

        let check = HealthCheck(client: client)
        #expect(try await check.run(repository: "anon/app", action: .pull).repository == "anon/app")
        _ = try await check.run(repository: "anon/new-repo", action: .push)
        await Self.expectFailure(.repositoryNotFound, containing: "anon/missing") {
            _ = try await check.run(repository: "anon/missing", action: .pull)
        }
    }

    // MARK: - Basic

    @Test func basicRegistry() async throws {
        let registry = try await SharedRegistries.shared.basic()
        let client = try Self.upstream(registry, SharedRegistries.basicUser)
        #expect(try await client.method() == .basic)
        try await Self.push(TestImage(seed: 2), to: "basic/app", tag: "v1", with: client)
        _ = try await HealthCheck(client: client).run(repository: "basic/app", action: .pull)
        _ = try await HealthCheck(client: client).run(repository: "basic/app", action: .push)
    }

    @Test func basicRegistryWithAWrongPasswordOrNone() async throws {
        let registry = try await SharedRegistries.shared.basic()
        let wrong = try Self.upstream(registry, ("alice", "not-the-password"))
        await Self.expectFailure(.badCredentials) {
            _ = try await HealthCheck(client: wrong).run(repository: "basic/app", action: .pull)
        }
        let none = try Self.upstream(registry, nil)
        await Self.expectFailure(.badCredentials) {
            _ = try await HealthCheck(client: none).run(repository: "basic/app", action: .pull)
        }
    }

    // MARK: - Token auth

    @Test func tokenRegistry() async throws {
        let (registry, _) = try await SharedRegistries.shared.token()
        let client = try Self.upstream(registry, SharedRegistries.robotUser)
        guard case .bearer(let endpoint) = try await client.method() else {
            Issue.record("expected a Bearer challenge")
            return
        }
        #expect(endpoint.service == "test-registry")
        try await Self.push(TestImage(seed: 3), to: "token/app", tag: "v1", with: client)
        let (status, body) = try await Self.tagList("token/app", with: client)
        #expect(status == .ok && body.contains("v1"))
        _ = try await HealthCheck(client: client).run(repository: "token/app", action: .push)
        await Self.expectFailure(.repositoryNotFound) {
            _ = try await HealthCheck(client: client).run(repository: "token/missing", action: .pull)
        }
    }

    @Test func tokenRegistryWithAWrongPassword() async throws {
        let (registry, _) = try await SharedRegistries.shared.token()
        let client = try Self.upstream(registry, ("robot$ci", "wrong"))
        await Self.expectFailure(.badCredentials, containing: "rejected the credentials") {
            _ = try await HealthCheck(client: client).run(repository: "token/app", action: .pull)
        }
    }

    @Test func tokenRegistryWithInsufficientScopeSaysWhatWasGranted() async throws {
        let (registry, _) = try await SharedRegistries.shared.token()
        let robot = try Self.upstream(registry, SharedRegistries.robotUser)
        try await Self.push(TestImage(seed: 4), to: "token/readonly", tag: "v1", with: robot)
        let reader = try Self.upstream(registry, SharedRegistries.readerUser)
        _ = try await HealthCheck(client: reader).run(repository: "token/readonly", action: .pull)
        await Self.expectFailure(.insufficientScope, containing: "granted: pull") {
            _ = try await HealthCheck(client: reader).run(repository: "token/readonly", action: .push)
        }
    }

    @Test func concurrentRequestsMakeOneTokenRequestPerScope() async throws {
        let (registry, issuer) = try await TokenAuthRegistry.start()
        defer { registry.stop(); issuer.stop() }
        let client = try Self.upstream(registry, SharedRegistries.robotUser)
        try await Self.push(TestImage(seed: 5), to: "cache/app", tag: "v1", with: client)
        let before = issuer.counts.total

        let statuses = try await withThrowingTaskGroup(of: HTTPResponseStatus.self) { group in
            for _ in 0..<50 {
                group.addTask { try await Self.tagList("cache/app", with: client).0 }
            }
            return try await group.reduce(into: [HTTPResponseStatus]()) { $0.append($1) }
        }
        #expect(statuses.allSatisfy { $0 == .ok })
        // The push took pull,push; the pulls need pull alone: one more token request in all.
        #expect(issuer.counts.total - before == 1)
        #expect(issuer.scopesRequested.last == ["repository:cache/app:pull"])
    }

    @Test func aRejectedTokenIsDroppedAndTheRequestRetriedOnce() async throws {
        let (registry, issuer) = try await TokenAuthRegistry.start()
        defer { registry.stop(); issuer.stop() }
        let tokens = TokenCache()
        let client = try Self.upstream(registry, SharedRegistries.robotUser, tokens: tokens)
        try await Self.push(TestImage(seed: 6), to: "retry/app", tag: "v1", with: client)
        // Plant a token the registry will refuse under the key a pull uses.
        let key = TokenCache.Key(connector: client.connector.id, scopes: [.repository("retry/app", actions: ["pull"])])
        _ = try await tokens.token(for: key) { _ async throws(AuthError) -> RegistryToken in
            RegistryToken(value: "not.a-valid.token", lifetime: .seconds(300))
        }
        let before = issuer.counts.total
        let (status, _) = try await Self.tagList("retry/app", with: client)
        #expect(status == .ok)
        #expect(issuer.counts.total - before == 1)
        // The good token replaced the bad one: no further token requests.
        _ = try await Self.tagList("retry/app", with: client)
        #expect(issuer.counts.total - before == 1)
    }

    @Test func tokensAreRefreshedBeforeTheyExpire() async throws {
        let (registry, issuer) = try await TokenAuthRegistry.start()
        defer { registry.stop(); issuer.stop() }
        // The issuer's tokens live 300 s: on the cache's clock, each is due for refresh after 150 s
        // and usable until 270 s. The registry checks them against the real clock, which stays
        // well inside their lifetime.
        let clock = ManualClock()
        let tokens = TokenCache(
            configuration: .init(minimumLifetime: .zero, safetyMargin: .seconds(30), refreshFraction: 0.5), clock: clock)
        let client = try Self.upstream(registry, SharedRegistries.robotUser, tokens: tokens)
        try await Self.push(TestImage(seed: 7), to: "refresh/app", tag: "v1", with: client)
        let key = TokenCache.Key(connector: client.connector.id, scopes: [.repository("refresh/app", actions: ["pull"])])
        #expect(try await Self.tagList("refresh/app", with: client).0 == .ok)
        let before = issuer.counts.total
        // A long operation: a request every 30 s over two token lifetimes. Each token serves its
        // first 150 s without a token request; the request that finds it due starts one refresh.
        for refreshed in 1...4 {
            for _ in 0..<5 {
                clock.advance(by: .seconds(30))
                #expect(try await Self.tagList("refresh/app", with: client).0 == .ok)
            }
            #expect(try await eventually { tokens.readyToken(for: key) != nil }, "the refresh did not land")
            #expect(issuer.counts.total - before == refreshed)
        }
        // A token past its usable time is not sent: the request waits for a new one.
        clock.advance(by: .seconds(270))
        #expect(tokens.readyToken(for: key) == nil)
        #expect(try await Self.tagList("refresh/app", with: client).0 == .ok)
        #expect(issuer.counts.total - before == 5)
        #expect(issuer.scopesRequested.suffix(5).allSatisfy { $0 == ["repository:refresh/app:pull"] })
    }

    @Test func oauth2PostWithRefreshTokens() async throws {
        let (registry, issuer) = try await TokenAuthRegistry.start()
        defer { registry.stop(); issuer.stop() }
        let clock = ManualClock()
        let tokens = TokenCache(
            configuration: .init(minimumLifetime: .zero, safetyMargin: .seconds(30), refreshFraction: 0.5), clock: clock)
        let client = try Self.upstream(registry, SharedRegistries.robotUser, parameters: ["tokenMethod": "post"], tokens: tokens)
        try await Self.push(TestImage(seed: 8), to: "oauth/app", tag: "v1", with: client)
        #expect(issuer.counts.get == 0)
        #expect(issuer.counts.post >= 1)
        let key = TokenCache.Key(connector: client.connector.id, scopes: [.repository("oauth/app", actions: ["pull"])])
        #expect(try await Self.tagList("oauth/app", with: client).0 == .ok)
        #expect(issuer.counts.refreshGrants == 0)
        // Due for refresh (after 150 s of 300): renewed with the refresh token the POST gave.
        clock.advance(by: .seconds(160))
        #expect(try await Self.tagList("oauth/app", with: client).0 == .ok)
        #expect(try await eventually { tokens.readyToken(for: key) != nil }, "the refresh did not land")
        #expect(issuer.counts.refreshGrants == 1)
        #expect(issuer.counts.rejected == 0)
        // The registry takes the renewed token: no further token request.
        let served = issuer.counts
        #expect(try await Self.tagList("oauth/app", with: client).0 == .ok)
        #expect(issuer.counts == served)
        #expect(issuer.counts.get == 0)
    }

    @Test func oauth2FallsBackToGetWhenPostIsRefused() async throws {
        let (registry, issuer) = try await TokenAuthRegistry.start(acceptPost: false)
        defer { registry.stop(); issuer.stop() }
        let client = try Self.upstream(registry, SharedRegistries.robotUser, parameters: ["tokenMethod": "post"])
        try await Self.push(TestImage(seed: 9), to: "fallback/app", tag: "v1", with: client)
        #expect(issuer.counts.post == 0)
        #expect(issuer.counts.get >= 1)
    }

    @Test func anUnreachableTokenServer() async throws {
        let (registry, issuer) = try await TokenAuthRegistry.start()
        defer { registry.stop() }
        issuer.stop()
        // Stopping is asynchronous: wait until the issuer's port refuses connections.
        try #require(try await eventually { !Loopback.isListening(issuer.port) }, "the token server did not stop")
        let client = try Self.upstream(registry, SharedRegistries.robotUser)
        await Self.expectFailure(.unreachable, containing: "token server") {
            _ = try await HealthCheck(client: client).run(repository: "x/y", action: .pull)
        }
    }

    @Test func anUnreachableRegistry() async throws {
        let port = try Loopback.freePort()
        let connector = Connector(
            id: try ConnectorID(parsing: "team-a/gone"), address: try RegistryAddress(parsing: "http://127.0.0.1:\(port)"))
        let client = UpstreamClient(connector: connector, httpClient: Self.httpClient, tokens: TokenCache())
        await Self.expectFailure(.unreachable) {
            _ = try await HealthCheck(client: client).run(repository: "x/y", action: .pull)
        }
    }

    @Test func aTLSFailure() async throws {
        // TLS to a port that speaks plain HTTP fails the handshake.
        let registry = try await SharedRegistries.shared.anonymous()
        let connector = Connector(
            id: try ConnectorID(parsing: "team-a/tls"),
            address: try RegistryAddress(parsing: "https://127.0.0.1:\(registry.port)"))
        let client = UpstreamClient(connector: connector, httpClient: Self.httpClient, tokens: TokenCache())
        await Self.expectFailure(.tlsFailure) {
            _ = try await HealthCheck(client: client).run(repository: "x/y", action: .pull)
        }
    }

    @Test func aPrivateCertificateAuthorityPerConnector() async throws {
        let registry = try await TestRegistry.start(.anonymous, tls: true)
        defer { registry.stop() }
        let id = try ConnectorID(parsing: "team-a/private-ca")
        let address = try RegistryAddress(parsing: registry.url)

        // The system trust store does not know the registry's certificate.
        let untrusted = UpstreamClient(
            connector: Connector(id: id, address: address), httpClient: Self.httpClient, tokens: TokenCache())
        await Self.expectFailure(.tlsFailure) {
            _ = try await HealthCheck(client: untrusted).run(repository: "tls/app", action: .push)
        }

        // With the connector's own CA bundle (spec.tls), it does.
        let connector = Connector(id: id, address: address, trustedCertificatesPEM: registry.certificatePEM)
        let trustingClient = try UpstreamHTTPClient.make(for: connector)
        let trusted = UpstreamClient(connector: connector, httpClient: trustingClient, tokens: TokenCache())
        let outcome = await Result { try await HealthCheck(client: trusted).run(repository: "tls/app", action: .push) }
        try await trustingClient.shutdown()
        _ = try outcome.get()
    }

    @Test func credentialsNeverAppearInErrors() async throws {
        let (registry, _) = try await SharedRegistries.shared.token()
        let secret = "leak-canary-\(UUID().uuidString)"
        let client = try Self.upstream(registry, ("robot$ci", secret))
        do {
            _ = try await HealthCheck(client: client).run(repository: "token/app", action: .pull)
            Issue.record("a wrong password passed")
        } catch {
            #expect(!"\(error)".contains(secret))
            #expect(!String(reflecting: error).contains(secret))
        }
        #expect(!"\(client.connector)".contains(secret))
        #expect(!"\(client.connector.credentials!)".contains(secret))
    }
}

extension Result where Failure == any Error {
    init(catching body: () async throws -> Success) async {
        do { self = .success(try await body()) } catch { self = .failure(error) }
    }
}
