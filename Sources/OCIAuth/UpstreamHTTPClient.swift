public import AsyncHTTPClient
import NIOCore
public import NIOSSL
public import OCIConnectors

/// Builds HTTP clients for upstream registries.
public enum UpstreamHTTPClient {
    /// A client that trusts the system's certificate authorities plus the connector's own
    /// (`spec.tls`), does not decompress (digests are over the raw bytes), and does not follow
    /// redirects (the proxy decides per connector what to do with them).
    ///
    /// The caller owns the client and shuts it down.
    public static func make(for connector: Connector? = nil) throws -> HTTPClient {
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        configuration.decompression = .disabled
        configuration.timeout.connect = .seconds(10)
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
