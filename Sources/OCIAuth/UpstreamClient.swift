public import AsyncHTTPClient
import Foundation
import Logging
public import NIOCore
public import NIOHTTP1
public import OCIConnectors
import OCIReference
import Synchronization

/// Talks to one connector's upstream registry with the connector's credentials.
///
/// It learns how the registry authenticates (no auth, Basic, or distribution token auth) from
/// one `GET /v2/`, then authorises every request up front from the scopes it will need, so a
/// request usually needs no 401 round trip. A 401 drops the token it carried, fetches one for the
/// scopes the registry asked for, and retries once when the body can be sent again.
public final class UpstreamClient: Sendable {
    /// How the upstream wants to be authenticated.
    public enum Method: Hashable, Sendable {
        /// No authentication.
        case anonymous
        /// HTTP Basic with the connector's credentials on every request.
        case basic
        /// Bearer tokens from a token server.
        case bearer(TokenEndpoint)
    }

    /// An `Authorization` header value and the cached token behind it, if any.
    public struct Authorization: Sendable {
        /// The header value; `nil` sends no `Authorization`.
        public let headerValue: String?
        let token: RegistryToken?
        let key: TokenCache.Key?

        /// Sets `headers`' `Authorization` to this one, replacing or removing what was there.
        public func apply(to headers: inout HTTPHeaders) {
            headers.remove(name: "Authorization")
            if let headerValue { headers.add(name: "Authorization", value: headerValue) }
        }
    }

    /// The connector this client serves.
    public let connector: Connector
    let httpClient: HTTPClient
    let tokens: TokenCache
    let timeout: TimeAmount
    private let discovery = MethodDiscovery()

    /// Creates a client. `httpClient` must trust the connector's certificates (see
    /// ``UpstreamHTTPClient/make(for:)``); `tokens` may be shared by many connectors.
    public init(connector: Connector, httpClient: HTTPClient, tokens: TokenCache, timeout: TimeAmount = .seconds(30)) {
        self.connector = connector
        self.httpClient = httpClient
        self.tokens = tokens
        self.timeout = timeout
    }

    /// The URL of a path on the upstream, such as `/v2/team/app/manifests/v1`.
    public func url(_ pathAndQuery: String) -> String {
        connector.address.baseURL + pathAndQuery
    }

    /// How the upstream authenticates, asking it once (concurrent callers share the answer).
    public func method() async throws(AuthError) -> Method {
        do {
            return try await discovery.method { () async throws(AuthError) -> Method in try await self.discoverMethod() }
        } catch let error as AuthError {
            throw error
        } catch {
            throw AuthError(.unexpectedResponse, "\(error)")
        }
    }

    /// The `Authorization` for a request that needs `scopes`.
    public func authorization(for scopes: ScopeSet) async throws(AuthError) -> Authorization {
        let method = try await method()
        guard case .bearer(let endpoint) = method else { return fixedAuthorization(method)! }
        let key = TokenCache.Key(connector: connector.id, scopes: scopes)
        let token = try await tokens.token(for: key, fetch: fetcher(endpoint, scopes: scopes))
        return Authorization(headerValue: token.authorization, token: token, key: key)
    }

    /// What anonymous and Basic upstreams get on every request; `nil` for token auth.
    private func fixedAuthorization(_ method: Method) -> Authorization? {
        switch method {
        case .anonymous: Authorization(headerValue: nil, token: nil, key: nil)
        case .basic: Authorization(headerValue: connector.credentials?.basicAuthorization, token: nil, key: nil)
        case .bearer: nil
        }
    }

    /// The `Authorization` for `scopes` if it is at hand without waiting: the method is known and,
    /// for token auth, a token for these scopes is cached and not due for refresh. `nil` means
    /// ask ``authorization(for:)``.
    public func readyAuthorization(for scopes: @autoclosure () -> ScopeSet) -> Authorization? {
        guard let method = discovery.known else { return nil }
        guard case .bearer = method else { return fixedAuthorization(method) }
        let key = TokenCache.Key(connector: connector.id, scopes: scopes())
        return tokens.readyToken(for: key).map { Authorization(headerValue: $0.authorization, token: $0, key: key) }
    }

    /// Sends `request` (whose URL is on the upstream) authorised for `scopes`.
    ///
    /// On a 401 the rejected token is dropped and a new one is fetched for the scopes the
    /// registry's challenge names; the request is sent once more when `replayable` is true (its
    /// body can be sent again). Otherwise the 401 response is returned as it is.
    public func execute(_ request: HTTPClientRequest, scopes: ScopeSet, replayable: Bool) async throws(AuthError)
        -> HTTPClientResponse
    {
        try await execute(request, scopes: scopes, replayable: replayable, timeout: timeout)
    }

    /// ``execute(_:scopes:replayable:)`` with the time the answer's head may take to arrive,
    /// the request's body included: a request that streams a long body needs more than the
    /// client's usual timeout.
    public func execute(_ request: HTTPClientRequest, scopes: ScopeSet, replayable: Bool, timeout: TimeAmount)
        async throws(AuthError) -> HTTPClientResponse
    {
        var request = request
        let authorization = try await authorization(for: scopes)
        authorization.apply(to: &request.headers)
        let response = try await send(request, timeout: timeout)
        guard response.status == .unauthorized else { return response }

        let retry = try await recover(from: response.headers, rejected: authorization, scopes: scopes)
        guard replayable, let retry else { return response }
        request.headers.replaceOrAdd(name: "Authorization", value: retry)
        return try await send(request, timeout: timeout)
    }

    /// After a 401: forgets what was rejected and works out the header to retry with, or `nil`
    /// when nothing different can be tried.
    public func recover(from headers: HTTPHeaders, rejected: Authorization, scopes: ScopeSet) async throws(AuthError) -> String? {
        if let key = rejected.key, let token = rejected.token {
            await tokens.invalidate(key, rejected: token)
        }
        let challenges = try challenges(in: headers)
        if let bearer = challenges.first(where: { $0.scheme == "bearer" }) {
            let endpoint = try TokenEndpoint(challenge: bearer, registry: connector.address)
            discovery.learned(.bearer(endpoint))
            let wanted = scopes.union(ScopeSet(parsing: bearer[parameter: "scope"] ?? ""))
            let key = TokenCache.Key(connector: connector.id, scopes: wanted)
            let token = try await tokens.token(for: key, fetch: fetcher(endpoint, scopes: wanted))
            return token.value == rejected.token?.value ? nil : token.authorization
        }
        if challenges.contains(where: { $0.scheme == "basic" }), let credentials = connector.credentials {
            discovery.learned(.basic)
            return rejected.headerValue == credentials.basicAuthorization ? nil : credentials.basicAuthorization
        }
        return nil
    }

    private func fetcher(_ endpoint: TokenEndpoint, scopes: ScopeSet) -> TokenCache.Fetch {
        let credentials = connector.credentials
        let preferOAuth2 = connector.prefersOAuth2
        let client = httpClient
        let timeout = timeout
        return { refreshToken async throws(AuthError) -> RegistryToken in
            try await endpoint.fetchToken(
                scopes: scopes, credentials: credentials, preferOAuth2: preferOAuth2, refreshToken: refreshToken,
                client: client, timeout: timeout)
        }
    }

    /// Sends a request as it is, turning transport failures into ``AuthError``s.
    func send(_ request: HTTPClientRequest, timeout: TimeAmount? = nil) async throws(AuthError) -> HTTPClientResponse {
        do {
            return try await httpClient.execute(request, timeout: timeout ?? self.timeout)
        } catch {
            throw UpstreamFailure.classify(error, talkingTo: connector.address.baseURL)
        }
    }

    private func challenges(in headers: HTTPHeaders) throws(AuthError) -> [AuthChallenge] {
        do {
            return try AuthChallenge.parse(headers["WWW-Authenticate"])
        } catch {
            throw AuthError(.malformedChallenge, "\(connector.address.baseURL) sent a \(error)")
        }
    }

    private func discoverMethod() async throws(AuthError) -> Method {
        var request = HTTPClientRequest(url: url("/v2/"))
        request.method = .GET
        let response = try await send(request)
        _ = try? await response.body.collect(upTo: 64 * 1024)
        switch response.status.code {
        case 200..<300:
            return .anonymous
        case 401:
            let challenges = try challenges(in: response.headers)
            if let bearer = challenges.first(where: { $0.scheme == "bearer" }) {
                return .bearer(try TokenEndpoint(challenge: bearer, registry: connector.address))
            }
            if challenges.contains(where: { $0.scheme == "basic" }) {
                return .basic
            }
            throw AuthError(
                .malformedChallenge,
                "\(connector.address.baseURL) asks for authentication without a Bearer or Basic challenge")
        default:
            throw AuthError(
                .unexpectedResponse,
                "\(connector.address.baseURL)/v2/ answered \(response.status.code) \(response.status.reasonPhrase); is this a registry?"
            )
        }
    }
}

/// Remembers the upstream's authentication method; concurrent first requests share one probe.
///
/// Once known, the method is read under a lock without entering the actor: every proxied
/// request asks for it, and a hop onto the actor is a scheduled job per request.
final class MethodDiscovery: Sendable {
    private let state = Mutex<UpstreamClient.Method?>(nil)
    private let prober = Prober()

    /// The method, if known.
    var known: UpstreamClient.Method? { state.withLock { $0 } }

    func method(_ discover: @escaping @Sendable () async throws(AuthError) -> UpstreamClient.Method) async throws
        -> UpstreamClient.Method
    {
        if let method = known { return method }
        let method = try await prober.probe(discover)
        return state.withLock { known in
            if known == nil { known = method }
            return known!
        }
    }

    /// What a challenge taught: replaces what the probe found.
    func learned(_ method: UpstreamClient.Method) {
        state.withLock { $0 = method }
    }

    /// Shares one probe among concurrent first requests; a failed probe is retried by the next.
    private actor Prober {
        private var probe: Task<UpstreamClient.Method, any Error>?

        func probe(_ discover: @escaping @Sendable () async throws(AuthError) -> UpstreamClient.Method) async throws
            -> UpstreamClient.Method
        {
            let task = probe ?? Task { try await discover() }
            probe = task
            do {
                return try await task.value
            } catch {
                probe = nil
                throw error
            }
        }
    }
}
