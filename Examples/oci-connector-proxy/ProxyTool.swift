import ArgumentParser
import CoreMetrics
import Foundation
import Logging
import NIOCore
import NIOPosix
import OCIConnectorProxy
import OCIConnectors
import OCIProxyToken
import OCIReference
import OCIWorkloadIdentity
import Prometheus

/// `oci-connector-proxy`: serves the distribution API for every connector, injecting the
/// connectors' credentials. Every option can also be set from the environment.
@main
struct ProxyTool: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "oci-connector-proxy",
        abstract: "A credential-injecting OCI registry proxy for connectors.")

    private static let environment = ProcessInfo.processInfo.environment

    @Option(
        name: .customLong("connectors"),
        help: "Connector and Secret YAML, a file or directory; repeatable. (OCI_CONNECTOR_CONNECTORS, ':'-separated)")
    var connectorPaths: [String] = environment["OCI_CONNECTOR_CONNECTORS"].map { $0.split(separator: ":").map(String.init) } ?? []

    @Option(help: "Address to listen on, HOST:PORT (port 0 picks one). (OCI_CONNECTOR_LISTEN)")
    var listen: String = environment["OCI_CONNECTOR_LISTEN"] ?? "127.0.0.1:8080"

    @Option(
        name: .customLong("admin-listen"),
        help: ArgumentHelp(
            "Address of the admin listener, HOST:PORT: /healthz, /readyz and /metrics (Prometheus); off when unset. (OCI_CONNECTOR_ADMIN_LISTEN)",
            valueName: "host:port"))
    var adminListenOption: String?

    @Option(
        name: .customLong("tls-cert"),
        help: "PEM certificate chain to serve HTTPS with, re-read when it changes; with --tls-key. (OCI_CONNECTOR_TLS_CERT)")
    var tlsCertOption: String?

    @Option(name: .customLong("tls-key"), help: "PEM private key of --tls-cert. (OCI_CONNECTOR_TLS_KEY)")
    var tlsKeyOption: String?

    @Option(
        help:
            "Verification key(s) for proxy tokens: a JWK file or a directory of them; optional with --service-account-issuer or --service-account-jwks. (OCI_CONNECTOR_TOKEN_KEYS)"
    )
    var tokenKeys: String?

    @Option(
        name: .customLong("token-signing-key"),
        help: ArgumentHelp(
            "Serve the token endpoint (/token) with this signing key (a JWK from 'oci-connector-config keys generate'), and challenge clients with Bearer so they fetch and renew tokens by themselves. (OCI_CONNECTOR_TOKEN_SIGNING_KEY)",
            valueName: "file"))
    var tokenSigningKeyOption: String?

    @Option(
        help:
            "Seconds the token endpoint's tokens last, never beyond the credentials they are issued for. (OCI_CONNECTOR_TOKEN_LIFETIME)"
    )
    var tokenLifetime: Int = environment["OCI_CONNECTOR_TOKEN_LIFETIME"].flatMap { Int($0) } ?? 600

    @Option(
        name: .customLong("service-account-issuer"),
        help: ArgumentHelp(
            "Accept Kubernetes service account tokens of this issuer (the tokens' iss), its keys found by OIDC discovery; repeatable. (OCI_CONNECTOR_SERVICE_ACCOUNT_ISSUERS, ','-separated)",
            valueName: "url"))
    var serviceAccountIssuers: [String] =
        environment["OCI_CONNECTOR_SERVICE_ACCOUNT_ISSUERS"].map { $0.split(separator: ",").map(String.init) } ?? []

    @Option(
        name: .customLong("service-account-jwks"),
        help: ArgumentHelp(
            "Accept service account tokens of ISSUER, checked with the JWKS in FILE or at URL (for clusters whose discovery is not reachable); repeatable. (OCI_CONNECTOR_SERVICE_ACCOUNT_JWKS, ','-separated)",
            valueName: "issuer=file|url"))
    var serviceAccountJWKS: [String] =
        environment["OCI_CONNECTOR_SERVICE_ACCOUNT_JWKS"].map { $0.split(separator: ",").map(String.init) } ?? []

    @Option(
        name: .customLong("service-account-audience"),
        help: "The audience service account tokens must be for. (OCI_CONNECTOR_SERVICE_ACCOUNT_AUDIENCE)")
    var serviceAccountAudience: String =
        environment["OCI_CONNECTOR_SERVICE_ACCOUNT_AUDIENCE"] ?? ServiceAccountTokenVerifier.Configuration.defaultAudience

    @Option(
        name: .customLong("service-account-ca"),
        help: ArgumentHelp(
            "PEM CA to trust for issuers' discovery and keys, besides the system's; default: the pod's cluster CA, when mounted. (OCI_CONNECTOR_SERVICE_ACCOUNT_CA)",
            valueName: "file"))
    var serviceAccountCAOption: String?

    @Option(
        help: "Serve the host form too: a pattern such as 'c-{name}.{namespace}.svc.cluster.local'. (OCI_CONNECTOR_HOST_PATTERN)")
    var hostPattern: String?

    @Option(help: "Log level: trace, debug, info, notice, warning, error. (OCI_CONNECTOR_LOG_LEVEL)")
    var logLevel: String = environment["OCI_CONNECTOR_LOG_LEVEL"] ?? "info"

    @Option(
        help: "Seconds SIGTERM waits for answers under way before the proxy exits anyway. (OCI_CONNECTOR_SHUTDOWN_GRACE)")
    var shutdownGrace: Double = environment["OCI_CONNECTOR_SHUTDOWN_GRACE"].flatMap(Double.init) ?? 25

    @Option(help: "Log line format: text or json (one object per line). (OCI_CONNECTOR_LOG_FORMAT)")
    var logFormat: String = environment["OCI_CONNECTOR_LOG_FORMAT"] ?? "text"

    @Option(help: "Seconds a request head may take to arrive, from its first byte; then 408. (OCI_CONNECTOR_HEADER_TIMEOUT)")
    var headerTimeout: Double = environment["OCI_CONNECTOR_HEADER_TIMEOUT"].flatMap(Double.init) ?? 30

    @Option(help: "Seconds an idle keep-alive connection is kept open. (OCI_CONNECTOR_IDLE_TIMEOUT)")
    var idleTimeout: Double = environment["OCI_CONNECTOR_IDLE_TIMEOUT"].flatMap(Double.init) ?? 60

    @Option(
        help: "Largest request head in bytes, request line and headers together; larger is 431. (OCI_CONNECTOR_MAX_HEADER_BYTES)")
    var maxHeaderBytes: Int = environment["OCI_CONNECTOR_MAX_HEADER_BYTES"].flatMap { Int($0) } ?? 32 * 1024

    @Option(help: "Most client connections open at once; more are answered 503. (OCI_CONNECTOR_MAX_CONNECTIONS)")
    var maxConnections: Int = environment["OCI_CONNECTOR_MAX_CONNECTIONS"].flatMap { Int($0) } ?? 4096

    @Option(
        help:
            "Seconds a request body may stop arriving; then 408 and the connection closes; 0 for no limit. (OCI_CONNECTOR_BODY_TIMEOUT)"
    )
    var bodyTimeout: Double = environment["OCI_CONNECTOR_BODY_TIMEOUT"].flatMap(Double.init) ?? 60

    @Option(
        help:
            "Most requests one identity may have under way at once; more are answered 429; 0 for no limit. (OCI_CONNECTOR_MAX_REQUESTS_PER_IDENTITY)"
    )
    var maxRequestsPerIdentity: Int = environment["OCI_CONNECTOR_MAX_REQUESTS_PER_IDENTITY"].flatMap { Int($0) } ?? 256

    @Option(
        help:
            "Most requests under way at once through one connector; more are answered 429; 0 for no limit. (OCI_CONNECTOR_MAX_REQUESTS_PER_CONNECTOR)"
    )
    var maxRequestsPerConnector: Int = environment["OCI_CONNECTOR_MAX_REQUESTS_PER_CONNECTOR"].flatMap { Int($0) } ?? 1024

    @Option(
        help: "Seconds connecting to an upstream may take; then 504. (OCI_CONNECTOR_UPSTREAM_CONNECT_TIMEOUT)")
    var upstreamConnectTimeout: Double = environment["OCI_CONNECTOR_UPSTREAM_CONNECT_TIMEOUT"].flatMap(Double.init) ?? 10

    @Option(
        help:
            "Seconds an upstream may take to start answering a whole request, stay silent while its answer streams, or take none of an upload's body; then 504. (OCI_CONNECTOR_UPSTREAM_RESPONSE_TIMEOUT)"
    )
    var upstreamResponseTimeout: Double = environment["OCI_CONNECTOR_UPSTREAM_RESPONSE_TIMEOUT"].flatMap(Double.init) ?? 60

    @Flag(help: "Refuse to start without at least one connector. (OCI_CONNECTOR_REQUIRE_CONNECTORS=1)")
    var requireConnectors = environment["OCI_CONNECTOR_REQUIRE_CONNECTORS"] == "1"

    /// `--admin-listen`, or its environment variable.
    var adminListen: String? { adminListenOption ?? Self.environment["OCI_CONNECTOR_ADMIN_LISTEN"] }

    /// `--tls-cert`, or its environment variable.
    var tlsCert: String? { tlsCertOption ?? Self.environment["OCI_CONNECTOR_TLS_CERT"] }

    /// `--service-account-ca`, its environment variable, or the pod's cluster CA when mounted.
    var serviceAccountCA: String? {
        serviceAccountCAOption ?? Self.environment["OCI_CONNECTOR_SERVICE_ACCOUNT_CA"]
            ?? (FileManager.default.fileExists(atPath: ServiceAccountKeyFetcher.inClusterCAFile)
                ? ServiceAccountKeyFetcher.inClusterCAFile : nil)
    }

    /// The issuers of `--service-account-issuer` (keys by discovery) and `--service-account-jwks`
    /// (keys given), the latter winning for an issuer named by both.
    func serviceAccountIssuerList() throws -> [ServiceAccountIssuer] {
        var issuers: [String: ServiceAccountIssuer] = [:]
        for url in serviceAccountIssuers {
            guard url.hasPrefix("https://") || url.hasPrefix("http://") else {
                throw ValidationError("--service-account-issuer must be an http(s) URL, not '\(url)'")
            }
            issuers[url] = ServiceAccountIssuer(url: url)
        }
        for argument in serviceAccountJWKS {
            do {
                let issuer = try ServiceAccountIssuer(jwksArgument: argument)
                issuers[issuer.url] = issuer
            } catch {
                throw ValidationError("--service-account-jwks: \(error)")
            }
        }
        return issuers.keys.sorted().compactMap { issuers[$0] }
    }

    /// `--tls-key`, or its environment variable.
    var tlsKey: String? { tlsKeyOption ?? Self.environment["OCI_CONNECTOR_TLS_KEY"] }

    func validate() throws {
        _ = try ListenAddress(listen)
        if let adminListen {
            let admin = try ListenAddress(adminListen, option: "--admin-listen")
            let data = try ListenAddress(listen)
            if admin.port != 0, admin.port == data.port, admin.host == data.host {
                throw ValidationError("--admin-listen must differ from --listen: probes and metrics have a port of their own")
            }
        }
        guard headerTimeout > 0, idleTimeout > 0 else {
            throw ValidationError("--header-timeout and --idle-timeout must be positive")
        }
        guard LineLogHandler.Format(rawValue: logFormat) != nil else {
            throw ValidationError("--log-format must be text or json, not '\(logFormat)'")
        }
        guard (tlsCert == nil) == (tlsKey == nil) else {
            throw ValidationError("--tls-cert and --tls-key go together: give both to serve HTTPS, or neither")
        }
        guard shutdownGrace >= 0 else { throw ValidationError("--shutdown-grace must not be negative") }
        guard maxHeaderBytes >= 1024 else { throw ValidationError("--max-header-bytes must be at least 1024") }
        guard maxConnections >= 1 else { throw ValidationError("--max-connections must be at least 1") }
        guard bodyTimeout >= 0 else { throw ValidationError("--body-timeout must not be negative") }
        guard maxRequestsPerIdentity >= 0, maxRequestsPerConnector >= 0 else {
            throw ValidationError("--max-requests-per-identity and --max-requests-per-connector must not be negative")
        }
        guard upstreamConnectTimeout > 0, upstreamResponseTimeout > 0 else {
            throw ValidationError("--upstream-connect-timeout and --upstream-response-timeout must be positive")
        }
    }

    /// Seconds as NIO's time amount.
    private static func amount(_ seconds: Double) -> TimeAmount { .nanoseconds(Int64(seconds * 1e9)) }

    /// The limits on client connections the options set.
    var connectionLimits: ConnectionLimits {
        var limits = ConnectionLimits(
            headerTimeout: Self.amount(headerTimeout), idleTimeout: Self.amount(idleTimeout),
            maxHeadBytes: maxHeaderBytes, maxConnections: maxConnections)
        limits.bodyTimeout = bodyTimeout > 0 ? Self.amount(bodyTimeout) : nil
        return limits
    }

    func run() async throws {
        // Run Swift concurrency's jobs on the NIO event loops that do the I/O: every uploaded buffer
        // then moves between the client connection, the forwarding task and the upstream connection
        // without a thread switch (pull throughput +25 %, CPU per GiB -25 %; Documentation/Performance.md).
        if Self.environment["OCI_CONNECTOR_SWIFT_EXECUTOR"] == nil {
            NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
        }
        guard !connectorPaths.isEmpty else { throw ValidationError("--connectors is required") }
        let tokenKeys = tokenKeys ?? Self.environment["OCI_CONNECTOR_TOKEN_KEYS"]
        let issuers = try serviceAccountIssuerList()
        let signingKey = tokenSigningKeyOption ?? Self.environment["OCI_CONNECTOR_TOKEN_SIGNING_KEY"]
        guard tokenKeys != nil || !issuers.isEmpty || signingKey != nil else {
            throw ValidationError(
                "--token-keys is required, unless --service-account-issuer, --service-account-jwks or --token-signing-key is given"
            )
        }
        guard tokenLifetime >= 10 else { throw ValidationError("--token-lifetime must be at least 10 seconds") }
        let signer: ProxyTokenSigner?
        do {
            signer = try signingKey.map { try ProxyTokenSigner(contentsOf: URL(fileURLWithPath: $0)) }
        } catch {
            throw ValidationError("--token-signing-key: \(error)")
        }
        let hostPattern = hostPattern ?? Self.environment["OCI_CONNECTOR_HOST_PATTERN"]
        let address = try ListenAddress(listen)
        let (host, port) = (address.host, address.port)

        // Metrics are recorded only when something can read them: the admin listener.
        let metrics = adminListen.map { _ in PrometheusCollectorRegistry() }
        if let metrics { MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: metrics)) }

        let format = LineLogHandler.Format(rawValue: logFormat) ?? .text
        var configuredLogger = Logger(label: "oci-connector-proxy") { label in
            var handler = LineLogHandler(label: label)
            handler.format = format
            return handler
        }
        configuredLogger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        let logger = configuredLogger
        // Each connection is a descriptor: a soft limit below --max-connections would fail accepts.
        if let openFiles = OpenFileLimit.raise(), openFiles < UInt64(maxConnections) * 2 + 64 {
            logger.warning(
                "the open file limit is low for --max-connections: each client connection and each upstream one takes a descriptor",
                metadata: ["limit": "\(openFiles)", "max_connections": "\(maxConnections)"])
        }
        let catalog: ConnectorCatalog
        let verifier: ProxyTokenVerifier
        let pattern: ConnectorHostPattern?
        do {
            catalog = try ConnectorCatalog.load(from: connectorPaths)
            verifier = try tokenKeys.map(ProxyTokenVerifier.load(from:)) ?? ProxyTokenVerifier(keys: [])
            pattern = try hostPattern.map(ConnectorHostPattern.init)
        } catch let error as ConnectorConfigError {
            throw ValidationError("\(error)")
        } catch let error as ProxyTokenError {
            throw ValidationError("\(error)")
        } catch let error as ReferenceError {
            throw ValidationError("\(error)")
        }
        if catalog.connectors.isEmpty {
            let paths = connectorPaths.joined(separator: ", ")
            if requireConnectors {
                FileHandle.standardError.write(Data("Error: no connector is defined in \(paths) (--require-connectors)\n".utf8))
                throw ExitCode.failure
            }
            logger.warning(
                "no connector is defined: every request will be answered NAME_UNKNOWN", metadata: ["connectors": "\(paths)"])
        }
        var tls: ListenerTLS?
        if let tlsCert, let tlsKey {
            do {
                tls = try ListenerTLS(certificateFile: tlsCert, keyFile: tlsKey, logger: logger)
            } catch {
                FileHandle.standardError.write(Data("Error: \(error)\n".utf8))
                throw ExitCode.failure
            }
        }
        var configuration = ConnectorProxy.Configuration(hostPattern: pattern, connections: connectionLimits)
        configuration.requestLimits = RequestLimits(
            perIdentity: maxRequestsPerIdentity, perConnector: maxRequestsPerConnector)
        configuration.upstreamTimeouts = UpstreamTimeouts(
            connect: Self.amount(upstreamConnectTimeout), response: Self.amount(upstreamResponseTimeout))
        configuration.tokenSigner = signer
        configuration.tokenLifetime = tokenLifetime
        var keyFetcher: ServiceAccountKeyFetcher?
        if !issuers.isEmpty {
            let fetcher: ServiceAccountKeyFetcher
            do {
                fetcher = try ServiceAccountKeyFetcher(
                    caFile: serviceAccountCA,
                    tokenFile: FileManager.default.fileExists(atPath: ServiceAccountKeyFetcher.inClusterTokenFile)
                        ? ServiceAccountKeyFetcher.inClusterTokenFile : nil)
            } catch {
                throw ValidationError("--service-account-ca \(serviceAccountCA ?? ""): \(error)")
            }
            keyFetcher = fetcher
            configuration.serviceAccounts = ServiceAccountTokenVerifier(
                issuers: issuers, configuration: .init(audience: serviceAccountAudience),
                fetch: { try await fetcher.fetch($0) })
            logger.notice(
                "service account tokens accepted",
                metadata: [
                    "issuers": "\(issuers.map(\.url).joined(separator: ","))", "audience": "\(serviceAccountAudience)",
                    "bindings": "\(catalog.bindings.count)",
                ])
        }
        let proxy = try ConnectorProxy(catalog: catalog, verifier: verifier, configuration: configuration, logger: logger)
        let connectors = catalog.connectors.keys.sorted().map(\.description).joined(separator: ", ")
        let server: ProxyServer
        do {
            server = try await ProxyServer.bind(proxy, host: host, port: port, tls: tls)
        } catch {
            // Binding failed (the address is in use, or not this machine's): one line, not a trace.
            await proxy.shutdown()
            let reason = (error as? IOError).map { String(cString: strerror($0.errnoCode)) } ?? "\(error)"
            FileHandle.standardError.write(Data("Error: cannot listen on \(host):\(port): \(reason)\n".utf8))
            throw ExitCode.failure
        }
        let bound = server.localAddress?.port ?? port
        var admin: AdminServer?
        if let adminListen, let metrics {
            let address = try ListenAddress(adminListen, option: "--admin-listen")
            let endpoints = AdminServer.Endpoints(
                notReady: { server.isDraining ? "draining: the proxy is shutting down" : nil },
                metrics: { metrics.emitToString() })
            do {
                admin = try await AdminServer.bind(host: address.host, port: address.port, endpoints: endpoints)
            } catch {
                await server.shutdownGracefully()
                await proxy.shutdown()
                let reason = (error as? IOError).map { String(cString: strerror($0.errnoCode)) } ?? "\(error)"
                FileHandle.standardError.write(Data("Error: cannot listen on \(adminListen) (--admin-listen): \(reason)\n".utf8))
                throw ExitCode.failure
            }
            let adminPort = admin?.localAddress?.port ?? address.port
            FileHandle.standardOutput.write(Data("admin listening on \(address.host):\(adminPort)\n".utf8))
            logger.notice("admin listener", metadata: ["address": "\(address.host):\(adminPort)"])
        }
        // One line on stdout for scripts and tests, the last one; details go to the log.
        FileHandle.standardOutput.write(Data("listening on \(host):\(bound)\n".utf8))
        logger.notice(
            "serving",
            metadata: [
                "address": "\(host):\(bound)", "scheme": "\(tls == nil ? "http" : "https")", "connectors": "\(connectors)",
            ])

        // Connectors, Secrets and token keys are re-read when their files change, and on SIGHUP.
        let reloader = Task {
            await ConfigurationReloader(connectorPaths: connectorPaths, tokenKeys: tokenKeys, proxy: proxy, logger: logger).run()
        }
        defer { reloader.cancel() }

        // SIGTERM (Kubernetes stopping the pod) or SIGINT: stop accepting, let answers under way
        // finish, then close the upstream connections.
        let signal = await ShutdownSignal.first(of: [SIGTERM, SIGINT])
        logger.notice("shutting down", metadata: ["signal": "\(signal)"])
        // Readiness fails from here on, so the Service stops sending new clients. Answers under
        // way get the grace period; Kubernetes kills the pod after its own (30 s by default).
        let grace = shutdownGrace
        let (outcome, decided) = AsyncStream.makeStream(of: Bool.self)
        Task {
            await server.shutdownGracefully()
            decided.yield(true)
        }
        Task {
            try? await Task.sleep(for: .milliseconds(Int64(grace * 1000)))
            decided.yield(false)
        }
        var finished = true
        for await value in outcome {
            finished = value
            break
        }
        if !finished {
            logger.warning(
                "answers still under way after the shutdown grace period: their connections are closed",
                metadata: ["grace_s": "\(grace)"])
        }
        await admin?.close()
        guard finished else { return }  // Exiting closes what is left, without waiting for it.
        await proxy.shutdown()
        await keyFetcher?.shutdown()
    }
}

/// The first of some signals to arrive, which then no longer end the process by default.
enum ShutdownSignal {
    static func first(of signals: [Int32]) async -> Int32 {
        let (stream, continuation) = AsyncStream.makeStream(of: Int32.self)
        let sources = signals.map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { continuation.yield(number) }
            source.resume()
            return source
        }
        defer { sources.forEach { $0.cancel() } }
        for await number in stream { return number }
        return SIGTERM
    }
}

/// `--listen`: `HOST:PORT` or `[IPv6]:PORT`, with a port from 0 (any free one) to 65535.
struct ListenAddress {
    let host: String
    let port: Int

    init(_ text: String, option: String = "--listen") throws {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]) else {
            throw ValidationError("\(option) must be HOST:PORT, not '\(text)'")
        }
        guard (0...65535).contains(port) else {
            throw ValidationError("\(option): port \(port) is out of range (0 to 65535; 0 picks a free one)")
        }
        let host = String(text[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        guard !host.isEmpty else { throw ValidationError("\(option) must name a host, such as 0.0.0.0:\(port)") }
        self.host = host
        self.port = port
    }
}
