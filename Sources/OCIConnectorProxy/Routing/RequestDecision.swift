import CoreMetrics
import NIOCore
import NIOHTTP1
import OCIAuth
import OCIProxyToken
import OCIReference

/// What the proxy does with one request, decided once, from its head, before anything goes
/// upstream: the route, the client's authorization and the upstream plan, carried with the
/// request to the one exchange that answers it.
enum RequestDecision {
    /// The proxy answers itself: the `/v2/` version check, or a refusal.
    case answer(LocalAnswer)
    /// A `GET` or `HEAD` of a manifest, a blob, a tag list or referrers, relayed on the event loop.
    case read(UpstreamPlan)
    /// Anything else that goes upstream (uploads, deletes, the catalog), streamed both ways.
    case forward(UpstreamPlan)
    /// `GET _catalog` for a client limited to some repositories: the proxy filters it.
    case filteredCatalog(UpstreamPlan, ClientGrant)
    /// A service account token to verify before the request is decided again, with the same log.
    case verifyFirst(ClientAuthenticator.PendingVerification, RequestLog)
    /// The token endpoint (``TokenRequest``), with the request's query.
    case issueToken(Substring?, RequestLog, ProxyTokenSigner)
}

/// A whole answer of the proxy's own.
struct LocalAnswer {
    let status: HTTPResponseStatus
    let headers: HTTPHeaders
    let body: String
    /// The error code logged with it, if it is an error.
    let detail: String?
    let log: RequestLog

    /// The version check's answer for a valid token, as registries answer it.
    static func versionCheck(log: RequestLog) -> LocalAnswer {
        LocalAnswer(
            status: .ok, headers: ["Content-Type": "application/json", "Docker-Distribution-API-Version": "registry/2.0"],
            body: "{}", detail: nil, log: log)
    }

    /// A refusal in the registry's error format.
    init(_ error: RegistryErrorResponse, log: RequestLog) {
        self.init(status: error.status, headers: error.responseHeaders, body: error.json, detail: error.code, log: log)
    }

    init(status: HTTPResponseStatus, headers: HTTPHeaders, body: String, detail: String?, log: RequestLog) {
        self.status = status
        self.headers = headers
        self.body = body
        self.detail = detail
        self.log = log
    }
}

/// Everything an exchange with the upstream needs, computed once.
struct UpstreamPlan {
    let method: HTTPMethod
    let upstream: ConnectorProxy.Upstream
    let route: RegistryRoute
    /// The upstream's path and query.
    let target: String
    /// The client's headers that go upstream: no hop-by-hop ones, no proxy token, no `Expect`.
    let headers: HTTPHeaders
    /// What the scopes the upstream's token must hold are worked out from, when they are needed:
    /// a connector without token auth never needs them, and they cost more to make than the
    /// rest of the plan.
    let scopeMountFrom: String?
    /// The scopes the upstream's token must hold.
    var scopes: ScopeSet { ScopeHints.scopes(method: method.rawValue, route: route, mountFrom: scopeMountFrom) }
    /// The request's body length, if `Content-Length` gives it.
    let contentLength: Int?
    /// Whether the request has a body to stream upstream.
    let hasBody: Bool
    /// Whether the client waits for `100 Continue` before it sends the body.
    let expectsContinue: Bool
    /// The proxy's origin as the client used it (`https://` on a TLS listener, and its `Host`),
    /// for locations rewritten back to the proxy.
    let origin: String
    /// The repository prefix the client's paths carry (empty in the host form).
    let prefix: String
    /// The query the client sent, for the filtered catalog.
    let query: String?
    let log: RequestLog

    /// The upstream answered a head `nanoseconds` after it was asked: for the connector's
    /// latency histogram and the request's log line.
    func upstreamAnswered(after nanoseconds: Int64) {
        upstream.latency.recordNanoseconds(nanoseconds)
        log.upstreamAnswered(after: nanoseconds)
    }
}

extension ConnectorProxy {
    /// Where a request goes: its connector (`nil` for `/v2/` itself), what it asks of the
    /// registry, and whether the connector is named in the path.
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

    /// Decides what to do with the request `head`, once: routes it, checks its proxy token
    /// (`lastVerified` is the connection's last verified token, compared before anything is
    /// looked up) and plans what goes upstream.
    /// `log` is the request's log when it is decided again, after its token was verified.
    func decide(
        _ head: HTTPRequestHead, client: String? = nil, secure: Bool = false,
        lastVerified: inout ClientAuthenticator.LastVerified?, log: RequestLog? = nil
    ) -> RequestDecision {
        let snapshot = snapshot
        let log = log ?? RequestLog(logger: logger, method: head.method.rawValue, client: client, metrics: snapshot.metrics)
        do {
            return try decision(head, log: log, snapshot: snapshot, secure: secure, lastVerified: &lastVerified)
        } catch {
            return .answer(LocalAnswer(error, log: log))
        }
    }

    private func decision(
        _ head: HTTPRequestHead, log: RequestLog, snapshot: Snapshot, secure: Bool,
        lastVerified: inout ClientAuthenticator.LastVerified?
    ) throws(RegistryErrorResponse) -> RequestDecision {
        let authenticator = snapshot.authenticator
        guard head.method != .CONNECT else {
            throw RegistryErrorResponse(
                .methodNotAllowed, "UNSUPPORTED", "the proxy is a registry, not a forward proxy: CONNECT is not served")
        }
        // Which connector, and what is asked of it.
        let host = head.headers.first(name: "Host") ?? "localhost"
        let (path, query) = Self.split(head.uri)
        if path == TokenRequest.path, let signer = configuration.tokenSigner {
            log.update { fields in
                fields.endpoint = "token"
                fields.endpointKind = "token"
            }
            guard head.method == .GET || head.method == .POST else {
                throw RegistryErrorResponse(.methodNotAllowed, "UNSUPPORTED", "the token endpoint takes GET and POST")
            }
            return .issueToken(query, log, signer)
        }
        let destination = try destination(host: host, path: path)
        let route = destination.route
        // A method the distribution API does not define for the route goes nowhere, as the
        // registry answers it.
        let allowed = Self.allowedMethods(route)
        guard allowed.contains(head.method) else {
            var refusal = RegistryErrorResponse(
                .methodNotAllowed, "UNSUPPORTED", "\(head.method.rawValue) is not an operation of the registry API on this path")
            refusal.headers.add(name: "Allow", value: allowed.map(\.rawValue).joined(separator: ", "))
            throw refusal
        }
        let repository: String?
        if case .repository(let name, _) = route { repository = name } else { repository = nil }
        let action = Self.action(head.method, route)
        log.update { fields in
            fields.connector = destination.connector?.description
            fields.action = destination.connector == nil ? nil : action
            if case .repository(let name, let endpoint) = route {
                fields.repository = name
                fields.endpoint = endpoint.path
                fields.endpointKind = endpoint.kind
                fields.reference = endpoint.reference
            } else {
                fields.endpoint = route == .catalog ? "_catalog" : "/"
                fields.endpointKind = route == .catalog ? "catalog" : "base"
            }
        }

        // Who asks: checked before anything goes upstream.
        let claims: ClientGrant
        do {
            switch try authenticator.authenticate(authorization: head.headers.first(name: "Authorization"), last: &lastVerified) {
            case .granted(let grant): claims = grant
            case .verifyFirst(let pending): return .verifyFirst(pending, log)
            }
        } catch {
            throw challenge(error, origin: (secure ? "https://" : "http://") + host, destination: destination, action: action)
        }
        log.update { fields in
            fields.identity = claims.identity
            fields.pod = claims.pod
        }
        guard let connector = destination.connector else {
            return .answer(.versionCheck(log: log))  // `/v2/`: any valid token may log in.
        }
        guard claims.allows(connector: connector, action: action, repository: repository) else {
            authenticator.count(.denied)
            if claims.isScoped, configuration.tokenSigner != nil {
                // A token of the endpoint without the scope this request needs: as registries
                // answer it, a challenge for that scope, which clients fetch a new token for.
                var refusal = RegistryErrorResponse(
                    .unauthorized, "UNAUTHORIZED",
                    "insufficient scope: the token does not allow \(action) on \(repository ?? "this connector")")
                refusal = challenge(
                    refusal, origin: (secure ? "https://" : "http://") + host, destination: destination, action: action)
                if let value = refusal.headers.first(name: "WWW-Authenticate") {
                    refusal.headers.replaceOrAdd(name: "WWW-Authenticate", value: value + #",error="insufficient_scope""#)
                }
                throw refusal
            }
            throw RegistryErrorResponse(
                .forbidden, "DENIED", claims.denial(connector: connector, action: action, repository: repository))
        }
        guard let upstream = snapshot.upstreams[connector] else {
            throw RegistryErrorResponse(.notFound, "NAME_UNKNOWN", "no connector \(connector) is configured")
        }
        if route == .base { return .answer(.versionCheck(log: log)) }
        // Under the request limits, counted until the request's log line is written.
        switch concurrency.admit(identity: claims.identity, connector: upstream.name) {
        case .success(let lease): log.hold(lease)
        case .failure(let reached): throw reached.refusal(identity: claims.identity, connector: upstream.name)
        }

        // The upstream request.
        var upstreamQuery = query.flatMap { $0.isEmpty ? nil : String($0) }
        var mountFrom: String?
        if case .repository(_, .uploadStart) = route {
            (upstreamQuery, mountFrom) = try Self.uploadStart(
                query: upstreamQuery, contentType: head.headers.first(name: "Content-Type"), prefix: destination.prefix,
                connector: connector, claims: claims)
        }
        let length = head.headers.first(name: "Content-Length").flatMap { Int($0) }
        let (headers, expectsContinue) = Self.forwardableHeaders(head.headers)
        let plan = UpstreamPlan(
            method: head.method, upstream: upstream, route: route,
            target: Self.upstreamPath(route) + (upstreamQuery.map { "?" + $0 } ?? ""), headers: headers,
            scopeMountFrom: mountFrom,
            contentLength: length, hasBody: head.announcesBody,
            expectsContinue: expectsContinue, origin: (secure ? "https://" : "http://") + host,
            prefix: destination.inPath ? upstream.pathPrefix : "",
            query: query.map(String.init), log: log)
        if route == .catalog, head.method == .GET, claims.limitsRepositories(of: connector) {
            return .filteredCatalog(plan, claims)
        }
        return Self.isRead(head.method, route) ? .read(plan) : .forward(plan)
    }

    /// A 401 whose challenge sends the client to the token endpoint, when there is one: a Bearer
    /// challenge naming the scope the request needs, as registries' challenges do.
    func challenge(_ refusal: RegistryErrorResponse, origin: String, destination: Destination, action: String)
        -> RegistryErrorResponse
    {
        guard configuration.tokenSigner != nil, refusal.status == .unauthorized else { return refusal }
        var refusal = refusal
        var value = #"Bearer realm="\#(origin)\#(TokenRequest.path)",service="\#(ClientAuthenticator.realm)""#
        if case .repository(let name, _) = destination.route {
            let clientName = destination.prefix.isEmpty ? name : destination.prefix + "/" + name
            value += #",scope="\#(TokenRequest.challengeScope(name: clientName, action: action))""#
        }
        refusal.headers.replaceOrAdd(name: "WWW-Authenticate", value: value)
        return refusal
    }

    /// The connector and upstream repository a token scope's repository name leads to: in the
    /// host form the `Host`'s connector and the name itself, in the path form the connector the
    /// name starts with (`namespaces/NS/connectors/NAME/…`).
    func tokenScopeTarget(_ name: String, host: String) -> (ConnectorID, String)? {
        if let pattern = configuration.hostPattern, let id = pattern.connector(forHost: host) {
            guard case .repository(let repository, _)? = try? RegistryRoute(path: "/v2/\(name)/tags/list") else { return nil }
            return (id, repository)
        }
        guard let split = try? ConnectorRoute(pathFormPath: "/v2/\(name)/tags/list"), let id = split.connector,
            case .repository(let repository, _) = split.route
        else { return nil }
        return (id, repository)
    }

    /// A request target's path and query (`nil` without a `?`).
    static func split(_ uri: String) -> (path: Substring, query: Substring?) {
        guard let mark = uri.utf8.firstIndex(of: UInt8(ascii: "?")) else { return (uri[...], nil) }
        return (uri[..<mark], uri[uri.index(after: mark)...])
    }

    /// The connector and route of `path`, named by the `Host` in the host form or in the path.
    func destination(host: String, path: Substring) throws(RegistryErrorResponse) -> Destination {
        do {
            if let pattern = configuration.hostPattern, let id = pattern.connector(forHost: host) {
                return Destination(connector: id, route: try RegistryRoute(path: path), inPath: false)
            }
            let split = try ConnectorRoute(pathFormPath: path)
            return Destination(connector: split.connector, route: split.route, inPath: true)
        } catch {
            throw Self.routeError(error, path: path)
        }
    }

    /// The methods the distribution API defines on `route` (and `HEAD` wherever it defines `GET`).
    static func allowedMethods(_ route: RegistryRoute) -> [HTTPMethod] {
        switch route {
        case .base, .catalog: return [.GET, .HEAD]
        case .repository(_, let endpoint):
            switch endpoint {
            case .manifest: return [.GET, .HEAD, .PUT, .DELETE]
            case .blob: return [.GET, .HEAD, .DELETE]
            case .uploadStart: return [.POST]
            case .upload: return [.GET, .HEAD, .PATCH, .PUT, .DELETE]
            case .tagList, .referrers: return [.GET, .HEAD]
            }
        }
    }

    /// The reads relayed on the event loop: `GET` and `HEAD` of repository content. Upload
    /// status, the base and the catalog are forwarded.
    static func isRead(_ method: HTTPMethod, _ route: RegistryRoute) -> Bool {
        guard method == .GET || method == .HEAD, case .repository(_, let endpoint) = route else { return false }
        switch endpoint {
        case .manifest, .blob, .tagList, .referrers: return true
        case .uploadStart, .upload: return false
        }
    }

    /// The path of `route` on the upstream.
    static func upstreamPath(_ route: RegistryRoute) -> String {
        switch route {
        case .base: "/v2/"
        case .catalog: "/v2/_catalog"
        case .repository(let name, let endpoint): "/v2/\(name)/\(endpoint.path)"
        }
    }

    /// `pull` to read, `delete` to delete manifests and blobs, `push` for everything else.
    static func action(_ method: HTTPMethod, _ route: RegistryRoute) -> String {
        switch method {
        case .GET, .HEAD: return "pull"
        case .DELETE:
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
        query raw: String?, contentType: String?, prefix: String, connector: ConnectorID, claims: ClientGrant
    ) throws(RegistryErrorResponse) -> (query: String?, mountFrom: String?) {
        // Registries read the fields of a form body as if they were in the query.
        if let type = contentType?.lowercased(),
            type.hasPrefix("application/x-www-form-urlencoded") || type.hasPrefix("multipart/form-data")
        {
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
            throw RegistryErrorResponse(
                .badRequest, "NAME_INVALID", "the repository to mount from is not a valid repository name")
        }
        guard claims.allows(connector: connector, action: "pull", repository: source) else {
            throw RegistryErrorResponse(
                .forbidden, "DENIED",
                "the token does not allow pull on \(source), the repository to mount from, through \(connector)")
        }
        query["from"] = source
        return (query.encoded, source)
    }

    /// The client's headers minus hop-by-hop ones (the proxy token among them) and those named
    /// by `Connection`.
    static func forwardableHeaders(_ fields: HTTPHeaders) -> (headers: HTTPHeaders, expectsContinue: Bool) {
        var headers = HTTPHeaders()
        // The usual case: no names to lowercase, and room for all but the hop-by-hop ones, made
        // once (with `Authorization`, added later).
        headers.reserveCapacity(fields.count)
        let connection = fields.first(name: "Connection")
        let named = connection.map { Set($0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).lowercased() }) }
        var expectsContinue = false
        for (name, value) in fields where !HeaderRewriter.isHopByHop(name) {
            if let named, named.contains(name.lowercased()) { continue }
            // `Expect` is answered by the proxy itself, not sent on.
            if name.utf8.count == 6, name.equalsIgnoringASCIICase("expect") {
                expectsContinue = expectsContinue || value.equalsIgnoringASCIICase("100-continue")
                continue
            }
            headers.add(name: name, value: value)
        }
        return (headers, expectsContinue)
    }

    /// The registry's answer to a path that is not one of its routes, or names something invalid.
    ///
    /// A manifest reference that is neither a tag nor a digest is no route of the registry's: it
    /// answers 404 to any method, and so does the proxy, as `MANIFEST_UNKNOWN` in its error format.
    static func routeError(_ error: ReferenceError, path: Substring) -> RegistryErrorResponse {
        switch error.code {
        case .invalidTag where path.contains("/manifests/"):
            RegistryErrorResponse(.notFound, "MANIFEST_UNKNOWN", "manifest unknown: \(error.reason)")
        case .invalidDigest: RegistryErrorResponse(.badRequest, "DIGEST_INVALID", error.reason)
        case .invalidTag: RegistryErrorResponse(.badRequest, "TAG_INVALID", error.reason)
        case .invalidUploadID: RegistryErrorResponse(.notFound, "BLOB_UPLOAD_UNKNOWN", error.reason)
        case .invalidConnector: RegistryErrorResponse(.notFound, "NAME_UNKNOWN", error.reason)
        case .unknownRoute: RegistryErrorResponse(.notFound, "UNSUPPORTED", error.reason)
        default: RegistryErrorResponse(.badRequest, "NAME_INVALID", error.reason)
        }
    }
}

extension RegistryEndpoint {
    /// The endpoint's kind, a metrics label: `manifests`, `blobs`, `uploads`, `tags` or `referrers`.
    var kind: String {
        switch self {
        case .manifest: "manifests"
        case .blob: "blobs"
        case .uploadStart, .upload: "uploads"
        case .tagList: "tags"
        case .referrers: "referrers"
        }
    }

    /// The tag or digest the endpoint names, if any.
    var reference: String? {
        switch self {
        case .manifest(let reference): "\(reference)"
        case .blob(let digest), .referrers(let digest): "\(digest)"
        case .uploadStart, .upload, .tagList: nil
        }
    }
}
