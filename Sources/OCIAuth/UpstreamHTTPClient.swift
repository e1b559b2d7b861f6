public import AsyncHTTPClient
public import NIOCore
public import NIOSSL
public import OCIConnectors

/// Builds HTTP clients for upstream registries.
public enum UpstreamHTTPClient {
    /// How many connections the client opens to one registry at once.
    ///
    /// The HTTP client's own default is 8, and a request beyond it waits for a connection to
    /// come free: behind a proxy, the ninth of a cluster's concurrent pushes to a registry would
    /// not start until one of the first eight finished. Like nginx (no limit unless `max_conns`)
    /// and Envoy (1024 per cluster), the proxy leaves concurrency to its clients and the registry.
    public static let connectionsPerHost = 1024

    /// A client that trusts the system's certificate authorities plus the connector's own
    /// (`spec.tls`), does not decompress (digests are over the raw bytes), does not follow
    /// redirects (the proxy decides per connector what to do with them), and opens up to
    /// ``connectionsPerHost`` connections to a registry at once.
    ///
    /// The caller owns the client and shuts it down.
    public static func make(for connector: Connector? = nil) throws -> HTTPClient {
        try make(for: connector, connectTimeout: .seconds(10), readTimeout: nil)
    }

    /// ``make(for:)`` with the time a connection may take to open (TCP and TLS), and the
    /// longest the registry may stay silent once it has a whole request (`nil`: no limit).
    public static func make(for connector: Connector?, connectTimeout: TimeAmount, readTimeout: TimeAmount?) throws
        -> HTTPClient
    {
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        configuration.decompression = .disabled
        configuration.timeout.connect = connectTimeout
        configuration.timeout.read = readTimeout
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = connectionsPerHost
        if connector?.trustedCertificatesPEM != nil {
            configuration.tlsConfiguration = try tlsConfiguration(for: connector)
        }
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    /// TLS settings that trust the system's certificate authorities plus the connector's own.
    public static func tlsConfiguration(for connector: Connector?) throws -> TLSConfiguration {
        var tls = TLSConfiguration.makeClientConfiguration()
        if let pem = connector?.trustedCertificatesPEM {
            tls.additionalTrustRoots = [.certificates(try NIOSSLCertificate.fromPEMBytes(Array(pem.utf8)))]
        }
        return tls
    }
}
