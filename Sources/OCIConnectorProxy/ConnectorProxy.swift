import AsyncHTTPClient
import CoreMetrics
import Foundation
public import Logging
public import NIOCore
import NIOHTTP1
import NIOSSL
public import OCIAuth
import OCIBlobForwarder
public import OCIConnectors
public import OCIProxyToken
public import OCIReference
public import OCIWorkloadIdentity
import Synchronization

/// The credential-injecting registry proxy: serves the distribution API for every connector,
/// authenticates workloads with proxy tokens or Kubernetes service account tokens (granted by
/// `ConnectorBinding`s), and forwards each request to the connector's
/// upstream with the connector's credentials, streaming bodies both ways.
///
/// Serve it with ``ProxyServer``, or add its handlers to a channel of your own with
/// ``configureConnection(_:)``. Each request is decided once, from its head (its route, the
/// client's authorization and the upstream plan), and answered by one exchange from start to end.
public final class ConnectorProxy: Sendable {
    /// Settings beyond the connectors and keys.
    public struct Configuration: Sendable {
        /// Maps `Host` headers to connectors for the host form; `nil` serves the path form only.
        public var hostPattern: ConnectorHostPattern?
        /// How long one forwarded request may take to be answered, its body included (an
        /// upload's body is not bound by ``upstreamTimeouts``).
        public var requestTimeout: TimeAmount
        /// How long the proxy waits for upstreams to connect and answer; then `504`.
        public var upstreamTimeouts = UpstreamTimeouts()
        /// How many requests one identity, and one connector, may have under way at once; more
        /// are answered `429`.
        public var requestLimits = RequestLimits()
        /// Upstream token timing.
        public var tokenCache: TokenCache.Configuration
        /// What client connections may hold before they send a request, and how many are open.
        public var connections: ConnectionLimits
        /// Kubernetes service account tokens to accept besides proxy tokens (`nil`: none); what
        /// each service account may do is what the catalog's `ConnectorBinding`s grant it.
        public var serviceAccounts: ServiceAccountTokenVerifier? = nil
        /// Signs the tokens of the proxy's token endpoint (`/token`); `nil` serves no endpoint.
        /// With it, the proxy's challenges are `Bearer realm="ORIGIN/token",…`, so clients fetch
        /// and renew tokens by themselves. Replicas share it (through a Secret), and trust the
        /// tokens it signs without it being among their verification keys.
        public var tokenSigner: ProxyTokenSigner? = nil
        /// How long the endpoint's tokens last, in seconds; never beyond the credentials they
        /// were issued for.
        public var tokenLifetime: Int = 600

        /// Creates settings.
        public init(
            hostPattern: ConnectorHostPattern? = nil, requestTimeout: TimeAmount = .hours(2),
            tokenCache: TokenCache.Configuration = .init(), connections: ConnectionLimits = .init()
        ) {
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
        let reads: RegistryReader
        /// `spec.auth.params` `redirects: pass`: hand upstream redirects to the client.
        let passRedirects: Bool
        /// Fetchers for the origins the upstream redirects reads to (registries on object
        /// storage do for every blob).
        let storage: StorageFetchers
        /// The connector's `namespace/name`, as tokens name it, and its repository prefix in the
        /// path form: made once, not for every read.
        let name: String
        let pathPrefix: String
        /// How long the upstream takes to answer a request's head
        /// (`oci_connector_upstream_response_seconds{connector}`).
        let latency: CoreMetrics.Timer

        /// The upstream could not be reached or answered nonsense.
        func unavailable(_ reason: String) -> RegistryErrorResponse {
            RegistryErrorResponse(.badGateway, "UNAVAILABLE", "upstream \(client.connector.address.registryName): \(reason)")
        }

        /// The upstream did not connect or answer in time.
        func timedOut(_ reason: String) -> RegistryErrorResponse {
            RegistryErrorResponse(.gatewayTimeout, "UNAVAILABLE", "upstream \(client.connector.address.registryName): \(reason)")
        }

        /// What the client is told when talking to the upstream failed: its token server or the
        /// registry refusing the connector's credentials is a 403, anything else a 502.
        func failure(_ error: AuthError, scopes: ScopeSet) -> RegistryErrorResponse {
            switch error.code {
            case .badCredentials, .insufficientScope: refused(scopes)
            case .timedOut: timedOut(error.reason)
            default: unavailable(error.reason)
            }
        }

        /// The upstream refused the connector's credentials.
        func refused(_ scopes: ScopeSet) -> RegistryErrorResponse {
            RegistryErrorResponse(
                .forbidden, "DENIED",
                "the upstream registry \(client.connector.address.registryName) refused the connector's credentials for \(scopes)"
            )
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
        let reads: RegistryReader
        let storage: StorageFetchers
    }

    /// What requests are decided with: replaced whole by ``reload(catalog:verifier:)``; a
    /// request takes the one current when it starts and keeps it to its end.
    struct Snapshot {
        let upstreams: [ConnectorID: Upstream]
        let authenticator: ClientAuthenticator
        let metrics: ProxyMetrics
    }

    /// The transports and registry connections made so far, kept across reloads so that
    /// connectors that did not change keep their pools and tokens; all are closed by ``shutdown()``.
    private struct Shared {
        var transports: [String: Transport] = [:]
        var registries: [String: Registry] = [:]
    }

    private let current: Mutex<Snapshot>
    private let shared: Mutex<Shared>
    private let tokens: TokenCache
    let configuration: Configuration
    /// The client connections open now, under ``ConnectionLimits/maxConnections``.
    let connections: ConnectionCounter
    /// The requests under way per identity and per connector.
    let concurrency: RequestConcurrency
    let logger: Logger

    /// The connectors and keys requests are decided with now.
    var snapshot: Snapshot { current.withLock { $0 } }

    /// Creates a proxy for the connectors in `catalog`, trusting tokens `verifier` accepts.
    public init(catalog: ConnectorCatalog, verifier: ProxyTokenVerifier, configuration: Configuration = .init(), logger: Logger)
        throws
    {
        let tokens = TokenCache(configuration: configuration.tokenCache)
        var shared = Shared()
        let upstreams: [ConnectorID: Upstream]
        do {
            upstreams = try Self.upstreams(
                for: catalog, previous: [:], shared: &shared, tokens: tokens, timeouts: configuration.upstreamTimeouts)
        } catch {
            // An HTTP client must be shut down before it goes.
            for transport in shared.transports.values { try? transport.http.syncShutdown() }
            throw error
        }
        self.tokens = tokens
        self.shared = Mutex(shared)
        let verifier = configuration.tokenSigner.map { verifier.trusting($0.verificationKey) } ?? verifier
        self.current = Mutex(
            Snapshot(
                upstreams: upstreams,
                authenticator: ClientAuthenticator(
                    verifier: verifier, serviceAccounts: configuration.serviceAccounts, catalog: catalog),
                metrics: ProxyMetrics(connectors: Set(catalog.connectors.keys.map(\.description)))))
        self.configuration = configuration
        self.connections = ConnectionCounter(maximum: configuration.connections.maxConnections)
        self.concurrency = RequestConcurrency(limits: configuration.requestLimits)
        self.logger = logger
    }

    /// What a reload changed.
    public struct ReloadSummary: Sendable, Equatable {
        /// Connectors that are new.
        public var added: [ConnectorID] = []
        /// Connectors that are gone: their requests now get `NAME_UNKNOWN`.
        public var removed: [ConnectorID] = []
        /// Connectors whose address, credentials, trust or parameters changed: their cached
        /// upstream tokens are dropped.
        public var changed: [ConnectorID] = []
    }

    /// Serves `catalog` and trusts the tokens `verifier` accepts from now on, without dropping a
    /// connection: requests under way finish with what they started with. Connectors that did
    /// not change keep their connections and upstream tokens; a changed one starts afresh. A
    /// catalog that cannot be served (a trust bundle that does not load) throws, and the
    /// current configuration stays.
    @discardableResult
    public func reload(catalog: ConnectorCatalog, verifier: ProxyTokenVerifier) async throws -> ReloadSummary {
        let previous = snapshot.upstreams
        let (tokens, timeouts) = (tokens, configuration.upstreamTimeouts)
        let upstreams = try shared.withLock { shared in
            try Self.upstreams(for: catalog, previous: previous, shared: &shared, tokens: tokens, timeouts: timeouts)
        }
        let verifier = configuration.tokenSigner.map { verifier.trusting($0.verificationKey) } ?? verifier
        var summary = ReloadSummary()
        for (id, upstream) in previous {
            if let now = catalog.connectors[id] {
                if now != upstream.client.connector { summary.changed.append(id) }
            } else {
                summary.removed.append(id)
            }
        }
        summary.added = catalog.connectors.keys.filter { previous[$0] == nil }
        summary.added.sort()
        summary.removed.sort()
        summary.changed.sort()
        current.withLock { current in
            current = Snapshot(
                upstreams: upstreams,
                authenticator: ClientAuthenticator(
                    verifier: verifier, serviceAccounts: configuration.serviceAccounts, catalog: catalog),
                metrics: ProxyMetrics(connectors: Set(catalog.connectors.keys.map(\.description))))
        }
        for id in summary.changed + summary.removed { await tokens.removeAll(connector: id) }
        return summary
    }

    /// The upstreams for `catalog`: those of `previous` whose connector is unchanged, new ones
    /// for the rest, on the transports and registry connections of `shared` where they fit.
    private static func upstreams(
        for catalog: ConnectorCatalog, previous: [ConnectorID: Upstream], shared: inout Shared, tokens: TokenCache,
        timeouts: UpstreamTimeouts
    ) throws -> [ConnectorID: Upstream] {
        var upstreams: [ConnectorID: Upstream] = [:]
        for (id, connector) in catalog.connectors {
            if let kept = previous[id], kept.client.connector == connector {
                upstreams[id] = kept
                continue
            }
            // Keyed by the certificates a connector trusts besides the system's ("" for none).
            let trust = connector.trustedCertificatesPEM ?? ""
            if shared.transports[trust] == nil {
                let tls = try UpstreamHTTPClient.tlsConfiguration(for: connector)
                shared.transports[trust] = Transport(
                    http: try UpstreamHTTPClient.make(
                        for: connector, connectTimeout: timeouts.connect, readTimeout: timeouts.response),
                    tls: SharedTLSContext(tls))
            }
            let transport = shared.transports[trust]!
            // Keyed by the trust and the registry's address.
            let registryKey = trust + "\n" + connector.address.baseURL
            if shared.registries[registryKey] == nil {
                // An https registry's context is built now, so that a broken trust fails at once.
                let reads = Self.registryReader(
                    for: connector, tls: connector.address.scheme == .https ? try transport.tls.context() : nil,
                    timeouts: timeouts)
                shared.registries[registryKey] = Registry(
                    reads: reads, storage: StorageFetchers(tls: transport.tls, timeouts: timeouts))
            }
            let registry = shared.registries[registryKey]!
            upstreams[id] = Upstream(
                client: UpstreamClient(
                    connector: connector, httpClient: transport.http, tokens: tokens, timeout: timeouts.response),
                http: transport.http, reads: registry.reads,
                passRedirects: connector.parameters["redirects"]?.lowercased() == "pass",
                storage: registry.storage, name: id.description, pathPrefix: ConnectorProxyAddress.repositoryPrefix(for: id),
                latency: CoreMetrics.Timer(
                    label: "oci_connector_upstream_response_seconds", dimensions: [("connector", id.description)],
                    preferredDisplayUnit: .seconds))
        }
        return upstreams
    }

    /// Closes the upstream connections.
    public func shutdown() async {
        let shared = shared.withLock { $0 }
        for transport in shared.transports.values {
            try? await transport.http.shutdown()
        }
        for registry in shared.registries.values {
            await registry.reads.shutdown()
            await registry.storage.shutdown()
        }
    }

    /// Calls `body` with each of the upstream's response headers the client gets, in the
    /// upstream's order: without hop-by-hop headers (but for the body's length), challenges and
    /// cookies, with locations pointing back at the proxy.
    static func forEachClientHeader(
        _ upstreamHeaders: HTTPHeaders, origin: String, prefix: String, upstream: Upstream, _ body: (String, String) -> Void
    ) {
        // Names are compared without lowercasing them, and the rewriter is made only for the
        // headers it rewrites: this runs for every answer relayed, most of them manifest `HEAD`s.
        func rewriter() -> HeaderRewriter {
            HeaderRewriter(clientOrigin: origin, repositoryPrefix: prefix, upstream: upstream.client.connector.address)
        }
        for (name, value) in upstreamHeaders {
            if name.utf8.count == 14, name.equalsIgnoringASCIICase("content-length") {
                body(name, value)  // Where the upstream put it: the body relayed is the upstream's.
            } else if HeaderRewriter.isWithheldFromClient(name) {
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
    static func registryReader(for connector: Connector, tls: NIOSSLContext?, timeouts: UpstreamTimeouts = .init())
        -> RegistryReader
    {
        let address = connector.address
        return RegistryReader(
            host: address.connectHost, port: address.connectPort, hostHeader: address.endpoint,
            sslContext: tls,
            configuration: .init(connectTimeout: timeouts.connect, readTimeout: timeouts.response, idleConnections: 64))
    }
}
