import AsyncHTTPClient
import Foundation
public import Hummingbird
public import HummingbirdCore
public import Logging
import HTTPTypes
public import NIOCore
import NIOHTTP1
import NIOSSL
public import OCIAuth
import OCIBlobForwarder
public import OCIConnectors
public import OCIProxyToken
public import OCIReference
import Synchronization

/// The credential-injecting registry proxy: a Hummingbird responder that serves the distribution
/// API for every connector, authenticates workloads with proxy tokens, and forwards each request
/// to the connector's upstream with the connector's credentials, streaming bodies both ways.
public final class ConnectorProxy: HTTPResponder, Sendable {
    public typealias Context = BasicRequestContext

    /// Settings beyond the connectors and keys.
    public struct Configuration: Sendable {
        /// Maps `Host` headers to connectors for the host form; `nil` serves the path form only.
        public var hostPattern: ConnectorHostPattern?
        /// How long one proxied request may take, body included.
        public var requestTimeout: TimeAmount
        /// Upstream token timing.
        public var tokenCache: TokenCache.Configuration
        /// What client connections may hold before they send a request, and how many are open.
        public var connections: ConnectionLimits

        /// Creates settings.
        public init(hostPattern: ConnectorHostPattern? = nil, requestTimeout: TimeAmount = .hours(2),
                    tokenCache: TokenCache.Configuration = .init(), connections: ConnectionLimits = .init()) {
            self.hostPattern = hostPattern
            self.requestTimeout = requestTimeout
            self.tokenCache = tokenCache
            self.connections = connections
        }
    }

    struct Upstream: Sendable {
        let client: UpstreamClient
        let http: HTTPClient
        /// Reads (GET and HEAD of manifests, blobs, tags, referrers): most requests and the bulk
        /// of the bytes, on connections tuned for them, shared with the other connectors to the
        /// same registry that trust the same certificates.
        let reads: BlobFetcher
        /// `spec.auth.params` `redirects: pass`: hand upstream redirects to the client.
        let passRedirects: Bool
        /// Fetchers for the origins the upstream redirects reads to (registries on object
        /// storage do for every blob).
        let storage: StorageFetchers
        /// Set once a blob read's redirect had to go to the responder (back to the upstream's
        /// origin, a second redirect, or a location the event loop does not take): later blob
        /// reads then go straight to the responder instead of being sent upstream twice.
        let handsOnRedirects = Flag()
        /// Set once a blob `HEAD` relayed as bytes was redirected: later ones go to the read
        /// fast path, which follows redirects to object storage itself.
        let redirectsBlobHeads = Flag()
        /// The connector's `namespace/name`, as tokens name it, and its repository prefix in the
        /// path form: made once, not for every read.
        let name: String
        let pathPrefix: String

        /// The upstream could not be reached or answered nonsense.
        func unavailable(_ reason: String) -> RegistryErrorResponse {
            RegistryErrorResponse(.badGateway, "UNAVAILABLE", "upstream \(client.connector.address.registryName): \(reason)")
        }

        /// What the client is told when talking to the upstream failed: its token server or the
        /// registry refusing the connector's credentials is a 403, anything else a 502.
        func failure(_ error: AuthError, scopes: ScopeSet) -> RegistryErrorResponse {
            switch error.code {
            case .badCredentials, .insufficientScope: refused(scopes)
            default: unavailable(error.reason)
            }
        }

        /// The upstream refused the connector's credentials.
        func refused(_ scopes: ScopeSet) -> RegistryErrorResponse {
            RegistryErrorResponse(
                .forbidden, "DENIED",
                "the upstream registry \(client.connector.address.registryName) refused the connector's credentials for \(scopes)")
        }
    }

    /// What connectors with the same trust share: an HTTP client and a TLS context. Each would
    /// otherwise parse the system's certificate authorities for itself, about 1 MiB of memory
    /// apiece (415 MiB for 400 `https` connectors; Performance.md).
    private struct Transport {
        let http: HTTPClient
        let tls: SharedTLSContext
    }

    /// What connectors to the same registry with the same trust share: the connections reads go
    /// over, and those to the storage it redirects blob reads to. Many connectors usually lead to
    /// one registry (a connector per team or namespace, one Harbor), and each pool keeps up to 64
    /// idle connections, 8 of them with a receive buffer of up to 1 MiB: per connector, a burst
    /// of pulls through each would leave that much behind for every one of them.
    private struct Registry {
        let reads: BlobFetcher
        let storage: StorageFetchers
    }

    let upstreams: [ConnectorID: Upstream]
    private let httpClients: [HTTPClient]
    private let registries: [Registry]
    let authenticator: ClientAuthenticator
    let configuration: Configuration
    /// The client connections open now, under ``ConnectionLimits/maxConnections``.
    let connections: ConnectionCounter
    let logger: Logger

    /// Creates a proxy for the connectors in `catalog`, trusting tokens `verifier` accepts.
    public init(catalog: ConnectorCatalog, verifier: ProxyTokenVerifier, configuration: Configuration = .init(), logger: Logger) throws {
        let tokens = TokenCache(configuration: configuration.tokenCache)
        var upstreams: [ConnectorID: Upstream] = [:]
        // Keyed by the certificates a connector trusts besides the system's ("" for none).
        var transports: [String: Transport] = [:]
        // Keyed by the trust and the registry's address.
        var registries: [String: Registry] = [:]
        do {
            for (id, connector) in catalog.connectors {
                let trust = connector.trustedCertificatesPEM ?? ""
                if transports[trust] == nil {
                    let tls = try UpstreamHTTPClient.tlsConfiguration(for: connector)
                    transports[trust] = Transport(http: try UpstreamHTTPClient.make(for: connector), tls: SharedTLSContext(tls))
                }
                let transport = transports[trust]!
                let registryKey = trust + "\n" + connector.address.baseURL
                if registries[registryKey] == nil {
                    // An https registry's context is built now, so that a broken trust fails at start-up.
                    let reads = Self.blobFetcher(for: connector, tls: connector.address.scheme == .https ? try transport.tls.context() : nil)
                    registries[registryKey] = Registry(reads: reads, storage: StorageFetchers(tls: transport.tls))
                }
                let registry = registries[registryKey]!
                upstreams[id] = Upstream(
                    client: UpstreamClient(connector: connector, httpClient: transport.http, tokens: tokens, timeout: .seconds(30)),
                    http: transport.http, reads: registry.reads,
                    passRedirects: connector.parameters["redirects"]?.lowercased() == "pass",
                    storage: registry.storage, name: id.description, pathPrefix: ConnectorProxyAddress.repositoryPrefix(for: id))
            }
        } catch {
            // An HTTP client must be shut down before it goes.
            for transport in transports.values { try? transport.http.syncShutdown() }
            throw error
        }
        self.upstreams = upstreams
        self.httpClients = transports.values.map(\.http)
        self.registries = Array(registries.values)
        self.authenticator = ClientAuthenticator(verifier: verifier)
        self.configuration = configuration
        self.connections = ConnectionCounter(maximum: configuration.connections.maxConnections)
        self.logger = logger
    }

    /// The HTTP/1.1 server the proxy runs on: Hummingbird's, plus ``ExpectContinueHandler`` and
    /// ``ReceiveBufferHandler``.
    public static var http1Server: HTTPServerBuilder {
        .http1(configuration: http1Configuration)
    }

    /// Hummingbird's HTTP/1 settings with the proxy's handlers, for both servers.
    private static var http1Configuration: HTTP1Channel.Configuration {
        .init(additionalChannelHandlers: [ExpectContinueHandler(), ReceiveBufferHandler()])
    }

    /// The HTTP/1.1 server for this proxy: ``http1Server`` plus a channel handler, right after
    /// NIO's HTTP/1 decoder, that answers `HEAD` and `GET` of manifests, blobs, tag lists and
    /// referrers on the event loop (a third to two fifths less CPU per request; Performance.md),
    /// and `/v2/` for a valid token (half the CPU). What it cannot finish goes on to Hummingbird
    /// and ``respond(to:context:)``, which is given at most two request parts ahead
    /// (Hummingbird's default is ten): a push waiting on the registry holds less.
    public var server: HTTPServerBuilder {
        let proxy = self
        return HTTPServerBuilder { responder in
            ServerChannel(base: HTTP1Channel(responder: responder, configuration: Self.http1Configuration), proxy: proxy)
        }
    }

    /// Closes the upstream connections.
    public func shutdown() async {
        for client in httpClients {
            try? await client.shutdown()
        }
        for registry in registries {
            await registry.reads.shutdown()
            await registry.storage.shutdown()
        }
    }

    public func respond(to request: Request, context: Context) async throws -> Response {
        let log = RequestLog(logger: logger, method: request.method.rawValue)
        do {
            return try await handle(request, log: log)
        } catch let error as RegistryErrorResponse {
            log.finish(status: Int(error.status.code), detail: error.code)
            return error.response
        }
    }

    /// Where a request goes: its connector (`nil` for `/v2/` itself), what it asks of the
    /// registry, and the repository prefix the client sees in the path form.
    struct Destination {
        let connector: ConnectorID?
        let route: RegistryRoute
        /// Whether the connector is named in the path (`/v2/namespaces/NS/connectors/NAME/…`).
        let inPath: Bool

        /// The repository prefix the client's paths carry: empty in the host form.
        var prefix: String {
            inPath ? connector.map(ConnectorProxyAddress.repositoryPrefix(for:)) ?? "" : ""
        }
    }

    func destination(host: String, path: String) throws(RegistryErrorResponse) -> Destination {
        do {
            if let pattern = configuration.hostPattern, let id = pattern.connector(forHost: host) {
                return Destination(connector: id, route: try RegistryRoute(path: path), inPath: false)
            }
            let split = try ConnectorRoute(pathFormPath: path)
            return Destination(connector: split.connector, route: split.route, inPath: true)
        } catch {
            throw Self.routeError(error)
        }
    }

    private func handle(_ request: Request, log: RequestLog) async throws -> Response {
        guard request.method != .connect else {
            throw RegistryErrorResponse(
                .methodNotAllowed, "UNSUPPORTED", "the proxy is a registry, not a forward proxy: CONNECT is not served")
        }
        // Which connector, and what is asked of it.
        let host = request.head.authority ?? "localhost"
        let destination = try destination(host: host, path: request.uri.path)
        let (connectorID, route, prefix) = (destination.connector, destination.route, destination.prefix)
        log.connector = connectorID?.description

        // Who asks: checked before anything goes upstream.
        let claims = try authenticator.claims(request)
        guard let connectorID else {
            log.endpoint = "/"
            return Self.versionCheck(log: log, method: request.method)  // `/v2/`: any valid token may log in.
        }
        let repository: String?
        if case .repository(let name, let endpoint) = route {
            repository = name
            log.repository = name
            log.endpoint = endpoint.path
        } else {
            repository = nil
            log.endpoint = route == .catalog ? "_catalog" : "/"
        }
        let action = Self.action(request.method, route)
        guard claims.allows(connector: connectorID.description, action: action, repository: repository) else {
            throw RegistryErrorResponse(
                .forbidden, "DENIED", "the token does not allow \(action) on \(repository ?? "this connector") through \(connectorID)")
        }
        guard let upstream = upstreams[connectorID] else {
            throw RegistryErrorResponse(.notFound, "NAME_UNKNOWN", "no connector \(connectorID) is configured")
        }
        if route == .base { return Self.versionCheck(log: log, method: request.method) }
        if route == .catalog, request.method == .get, claims.repositories != nil {
            return try await filteredCatalog(query: request.uri.query, connector: connectorID, claims: claims, host: host,
                                             prefix: prefix, upstream: upstream, log: log)
        }

        // The upstream request.
        var query = request.uri.query.flatMap { $0.isEmpty ? nil : $0 }
        var mountFrom: String?
        if case .repository(_, .uploadStart) = route {
            (query, mountFrom) = try Self.uploadStart(
                query: query, contentType: request.headers[.contentType], prefix: prefix, connector: connectorID, claims: claims)
        }
        let path = Self.upstreamPath(route)
        var outbound = HTTPClientRequest(url: upstream.client.url(path + (query.map { "?" + $0 } ?? "")))
        outbound.method = HTTPMethod(rawValue: request.method.rawValue)
        outbound.headers = Self.forwardableHeaders(request.headers)
        let length = request.headers[.contentLength].flatMap(Int.init)
        let hasBody = request.headers[.transferEncoding] != nil || (length ?? 0) > 0
        if hasBody {
            outbound.body = BlobForwarder.upstreamBody(from: request.body, length: length, counter: log.bytesIn)
        } else if [.put, .post, .patch].contains(request.method) {
            outbound.body = .bytes(ByteBuffer())
        }
        let scopes = ScopeHints.scopes(method: request.method.rawValue, route: route, mountFrom: mountFrom)
        if let method = Self.readMethod(request.method, route) {
            return try await read(method, outbound, target: path + (query.map { "?" + $0 } ?? ""), scopes: scopes,
                                  request: request, host: host, prefix: prefix, upstream: upstream, log: log)
        }

        var response: HTTPClientResponse
        do {
            response = try await upstream.client.execute(outbound, scopes: scopes, replayable: !hasBody)
            if (300..<400).contains(response.status.code), !upstream.passRedirects,
               request.method == .get || request.method == .head {
                response = try await follow(response, from: outbound, upstream: upstream)
            }
        } catch {
            throw upstream.failure(error, scopes: scopes)
        }
        if response.status == .unauthorized {
            _ = try? await response.body.collect(upTo: 64 * 1024)
            throw upstream.refused(scopes)
        }
        return respond(status: response.status, headers: response.headers, body: response.body,
                       to: request, host: host, prefix: prefix, upstream: upstream, log: log)
    }

    /// The path of `route` on the upstream.
    static func upstreamPath(_ route: RegistryRoute) -> String {
        switch route {
        case .base: "/v2/"
        case .catalog: "/v2/_catalog"
        case .repository(let name, let endpoint): "/v2/\(name)/\(endpoint.path)"
        }
    }

    /// The reads that go through the upstream's ``BlobFetcher``: GET and HEAD of repository
    /// content. The base and catalog endpoints stay on the general client.
    static func readMethod(_ method: HTTPRequest.Method, _ route: RegistryRoute) -> NIOHTTP1.HTTPMethod? {
        guard case .repository(_, let endpoint) = route else { return nil }
        switch endpoint {
        case .manifest, .blob, .tagList, .referrers: break
        case .uploadStart, .upload: return nil
        }
        switch method {
        case .get: return .GET
        case .head: return .HEAD
        default: return nil
        }
    }

    /// A read on the upstream's ``BlobFetcher``: authorised up front like every request, retried
    /// once after a 401, and redirects followed as for any other GET.
    ///
    /// Each answer's body is consumed exactly once: a 401's is drained where it arrives, and an
    /// upstream that still refuses after the retry (or offers nothing new to retry with) is
    /// answered 403 `DENIED`, never relayed.
    private func read(_ method: NIOHTTP1.HTTPMethod, _ outbound: HTTPClientRequest, target: String, scopes: ScopeSet,
                      request: Request, host: String, prefix: String, upstream: Upstream, log: RequestLog) async throws -> Response {
        var headers = outbound.headers
        let fetched: BlobResponse
        do {
            let authorization = try await upstream.client.authorization(for: scopes)
            authorization.apply(to: &headers)
            let first = try await upstream.reads.read(method, target, headers: headers)
            if first.head.status == .unauthorized {
                await Self.discard(first.body)
                guard let retry = try await upstream.client.recover(from: first.head.headers, rejected: authorization, scopes: scopes)
                else { throw upstream.refused(scopes) }
                headers.replaceOrAdd(name: "Authorization", value: retry)
                let second = try await upstream.reads.read(method, target, headers: headers)
                if second.head.status == .unauthorized {
                    await Self.discard(second.body)
                    throw upstream.refused(scopes)
                }
                fetched = second
            } else {
                fetched = first
            }
        } catch let error as RegistryErrorResponse {
            throw error
        } catch let error as AuthError {
            throw upstream.failure(error, scopes: scopes)
        } catch {
            throw upstream.unavailable("\(error)")
        }
        let status = fetched.head.status
        if (300..<400).contains(status.code), !upstream.passRedirects, let location = fetched.head.headers.first(name: "Location") {
            await Self.discard(fetched.body)
            let response: HTTPClientResponse
            do {
                response = try await follow(location, from: outbound, upstream: upstream)
            } catch {
                throw upstream.failure(error, scopes: scopes)
            }
            return respond(status: response.status, headers: response.headers, body: response.body,
                           to: request, host: host, prefix: prefix, upstream: upstream, log: log)
        }
        return respond(status: status, headers: fetched.head.headers, body: fetched.body,
                       to: request, host: host, prefix: prefix, upstream: upstream, log: log)
    }

    /// The most of an unwanted body (an error or a redirect) read to keep its connection: a larger
    /// one is dropped unread, which closes its connection.
    static let drainLimit = 64 * 1024

    /// Reads and drops a small body, up to ``drainLimit``, so its connection can be reused.
    private static func discard(_ body: BlobBody) async {
        var seen = 0
        do {
            for try await buffer in body {
                seen += buffer.readableBytes
                if seen > drainLimit { return }
            }
        } catch {}
    }

    /// Relays the upstream's answer, with its locations rewritten for the client.
    private func respond<Body: AsyncSequence & Sendable>(
        status upstreamStatus: HTTPResponseStatus, headers upstreamHeaders: HTTPHeaders, body upstreamBody: Body,
        to request: Request, host: String, prefix: String, upstream: Upstream, log: RequestLog
    ) -> Response where Body.Element == ByteBuffer {
        var headers = Self.clientHeaders(upstreamHeaders, host: host, prefix: prefix, upstream: upstream)
        let status = HTTPResponse.Status(code: Int(upstreamStatus.code), reasonPhrase: upstreamStatus.reasonPhrase)
        let length = upstreamHeaders.first(name: "Content-Length").flatMap(Int.init)
        if request.method == .head || length == 0 || status.code == 204 || status.code == 304 {
            if let length { headers[.contentLength] = String(length) }
            log.finish(status: status.code)
            return Response(status: status, headers: headers, body: ResponseBody())
        }
        let body = BlobForwarder.clientBody(from: upstreamBody, length: length, counter: log.bytesOut) { error in
            log.finish(status: status.code, detail: error.map { "aborted: \(type(of: $0))" })
        }
        return Response(status: status, headers: headers, body: body)
    }

    /// The upstream's response headers as the client gets them: without hop-by-hop headers,
    /// challenges and cookies, with locations pointing back at the proxy.
    static func clientHeaders(_ upstreamHeaders: HTTPHeaders, host: String, prefix: String, upstream: Upstream) -> HTTPFields {
        var headers = HTTPFields()
        forEachClientHeader(upstreamHeaders, host: host, prefix: prefix, upstream: upstream) { name, value in
            if let name = HTTPField.Name(name) { headers.append(HTTPField(name: name, value: value)) }
        }
        return headers
    }

    /// Calls `body` with each of the upstream's response headers the client gets, as
    /// ``clientHeaders(_:host:prefix:upstream:)`` describes.
    static func forEachClientHeader(
        _ upstreamHeaders: HTTPHeaders, host: String, prefix: String, upstream: Upstream, _ body: (String, String) -> Void
    ) {
        // Names are compared without lowercasing them, and the rewriter is made only for the
        // headers it rewrites: this runs for every answer relayed, most of them manifest `HEAD`s.
        func rewriter() -> HeaderRewriter {
            HeaderRewriter(clientOrigin: "http://\(host)", repositoryPrefix: prefix, upstream: upstream.client.connector.address)
        }
        for (name, value) in upstreamHeaders {
            if HeaderRewriter.isWithheldFromClient(name) {
                continue
            } else if name.equalsIgnoringASCIICase("location") {
                body(name, rewriter().location(value) ?? value)
            } else if name.equalsIgnoringASCIICase("link") {
                body(name, rewriter().link(value))
            } else {
                body(name, value)
            }
        }
    }

    // MARK: - Pieces

    /// The blob fetcher for a connector's upstream API endpoint.
    ///
    /// It keeps up to 64 idle connections, as many as the nginx configuration it is measured
    /// against: with 8, a quarter of the requests from 64 busy clients opened a new upstream
    /// connection, and the proxy spent a quarter more CPU per manifest request (Performance.md).
    /// Idle connections close after 30 s, and with them the receive buffers they keep.
    static func blobFetcher(for connector: Connector, tls: NIOSSLContext?) -> BlobFetcher {
        let address = connector.address
        return BlobFetcher(host: address.connectHost, port: address.connectPort, hostHeader: address.endpoint,
                           sslContext: tls, configuration: .init(idleConnections: 64))
    }

    /// The answer to `/v2/` for a valid token: the registry API version, as registries answer it.
    static func versionCheck() -> Response {
        Response(status: .ok, headers: versionCheckFields, body: .init(byteBuffer: ByteBuffer(string: versionCheckBody)))
    }

    static let versionCheckFields: HTTPFields = [
        .contentType: "application/json", HTTPField.Name("Docker-Distribution-API-Version")!: "registry/2.0",
    ]
    static let versionCheckBody = "{}"

    /// ``versionCheck()``, logged.
    private static func versionCheck(log: RequestLog, method: HTTPRequest.Method) -> Response {
        if method != .head { log.bytesOut.add(versionCheckBody.utf8.count) }
        log.finish(status: 200)
        return versionCheck()
    }

    /// `pull` to read, `delete` to delete manifests and blobs, `push` for everything else.
    static func action(_ method: HTTPRequest.Method, _ route: RegistryRoute) -> String {
        switch method {
        case .get, .head: return "pull"
        case .delete:
            if case .repository(_, .upload) = route { return "push" }
            return "delete"
        default: return "push"
        }
    }

    /// The upstream query of an upload start, and the repository a blob is mounted from, if
    /// any. The query is read as the registry reads it (``UploadStartQuery``); a mount source
    /// must be a repository of the same connector (named with its prefix in the path form) that
    /// the token may pull, as the registry itself requires pull access to it.
    static func uploadStart(
        query raw: String?, contentType: String?, prefix: String, connector: ConnectorID, claims: ProxyTokenClaims
    ) throws(RegistryErrorResponse) -> (query: String?, mountFrom: String?) {
        // Registries read the fields of a form body as if they were in the query.
        if let type = contentType?.lowercased(),
           type.hasPrefix("application/x-www-form-urlencoded") || type.hasPrefix("multipart/form-data") {
            throw RegistryErrorResponse(
                .unsupportedMediaType, "UNSUPPORTED", "an upload start cannot carry a form body; send parameters in the query")
        }
        guard let raw else { return (nil, nil) }
        var query = try UploadStartQuery(parsing: raw[...])
        guard let from = query["from"] else { return (query.encoded, nil) }
        var source = from
        if !prefix.isEmpty {
            guard from.hasPrefix(prefix + "/") else {
                throw RegistryErrorResponse(
                    .forbidden, "DENIED", "a blob can only be mounted from another repository of connector \(connector)")
            }
            source = String(from.dropFirst(prefix.count + 1))
        }
        guard case .repository(source, .tagList)? = try? RegistryRoute(path: "/v2/\(source)/tags/list") else {
            throw RegistryErrorResponse(.badRequest, "NAME_INVALID", "the repository to mount from is not a valid repository name")
        }
        guard claims.allows(connector: connector.description, action: "pull", repository: source) else {
            throw RegistryErrorResponse(
                .forbidden, "DENIED", "the token does not allow pull on \(source), the repository to mount from, through \(connector)")
        }
        query["from"] = source
        return (query.encoded, source)
    }

    /// The client's headers minus hop-by-hop ones and those named by `Connection`.
    static func forwardableHeaders(_ fields: HTTPFields) -> HTTPHeaders {
        var headers = HTTPHeaders()
        forEachForwardableHeader(fields.lazy.map { ($0.name.canonicalName, $0.name.rawName, $0.value) }, connection: fields[.connection]) {
            headers.add(name: $0, value: $1)
        }
        return headers
    }

    /// ``forwardableHeaders(_:)`` for NIO's HTTP/1 headers.
    static func forwardableHeaders(_ fields: HTTPHeaders) -> HTTPHeaders {
        var headers = HTTPHeaders()
        guard let connection = fields.first(name: "Connection") else {
            // The usual case, and the read fast path's only one: no names to lowercase, and room
            // for all but the hop-by-hop ones, made once (with `Authorization`, added later).
            headers.reserveCapacity(fields.count)
            for (name, value) in fields where !HeaderRewriter.isHopByHop(name) {
                headers.add(name: name, value: value)
            }
            return headers
        }
        forEachForwardableHeader(fields.lazy.map { ($0.name.lowercased(), $0.name, $0.value) }, connection: connection) {
            headers.add(name: $0, value: $1)
        }
        return headers
    }

    /// Calls `body` with each header (lowercased name, name, value) that is neither hop-by-hop
    /// nor named by `connection`.
    private static func forEachForwardableHeader(
        _ fields: some Sequence<(String, String, String)>, connection: String?, _ body: (String, String) -> Void
    ) {
        let named = Set((connection ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).lowercased() })
        for (canonical, name, value) in fields where !HeaderRewriter.hopByHop.contains(canonical) && !named.contains(canonical) {
            body(name, value)
        }
    }

    static func routeError(_ error: ReferenceError) -> RegistryErrorResponse {
        switch error.code {
        case .invalidDigest: RegistryErrorResponse(.badRequest, "DIGEST_INVALID", error.reason)
        case .invalidTag: RegistryErrorResponse(.badRequest, "TAG_INVALID", error.reason)
        case .invalidUploadID: RegistryErrorResponse(.notFound, "BLOB_UPLOAD_UNKNOWN", error.reason)
        case .invalidConnector: RegistryErrorResponse(.notFound, "NAME_UNKNOWN", error.reason)
        case .unknownRoute: RegistryErrorResponse(.notFound, "UNSUPPORTED", error.reason)
        default: RegistryErrorResponse(.badRequest, "NAME_INVALID", error.reason)
        }
    }
}

/// A flag that, once set, stays set; readable from any thread.
final class Flag: Sendable {
    private let value = Atomic<Bool>(false)

    var isSet: Bool { value.load(ordering: .relaxed) }

    func set() { value.store(true, ordering: .relaxed) }
}

/// One log line per request, written when the response body is done.
final class RequestLog: Sendable {
    let logger: Logger
    let method: String
    let started = ContinuousClock.now
    let bytesIn = ByteCounter()
    let bytesOut = ByteCounter()
    private let fields = Mutex(Fields())

    struct Fields {
        var connector: String?
        var repository: String?
        var endpoint: String?
        var finished = false
    }

    init(logger: Logger, method: String) {
        self.logger = logger
        self.method = method
    }

    var connector: String? {
        get { fields.withLock { $0.connector } }
        set { fields.withLock { $0.connector = newValue } }
    }

    var repository: String? {
        get { fields.withLock { $0.repository } }
        set { fields.withLock { $0.repository = newValue } }
    }

    var endpoint: String? {
        get { fields.withLock { $0.endpoint } }
        set { fields.withLock { $0.endpoint = newValue } }
    }

    func finish(status: Int, detail: String? = nil) {
        let snapshot = fields.withLock { fields -> Fields? in
            guard !fields.finished else { return nil }
            fields.finished = true
            return fields
        }
        // Below the log level nothing is built: this runs for every request.
        guard let snapshot, logger.logLevel <= .info else { return }
        let elapsed = ContinuousClock.now - started
        var metadata: Logger.Metadata = [
            "request_id": "\(RequestID.next())", "method": "\(method)", "status": "\(status)",
            "connector": "\(snapshot.connector ?? "-")", "repository": "\(snapshot.repository ?? "-")",
            "endpoint": "\(snapshot.endpoint ?? "-")", "bytes_in": "\(bytesIn.value)", "bytes_out": "\(bytesOut.value)",
            "duration_ms": "\(elapsed.components.seconds * 1000 + elapsed.components.attoseconds / 1_000_000_000_000_000)",
        ]
        if let detail { metadata["detail"] = "\(detail)" }
        logger.info("request", metadata: metadata)
    }
}
