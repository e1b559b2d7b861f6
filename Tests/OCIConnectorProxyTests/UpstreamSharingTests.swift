import Logging
import OCIConnectors
import OCIProxyToken
import OCIReference
import Testing

@testable import OCIConnectorProxy

/// Connectors are many, registries few: what does not depend on a connector's credentials is
/// set up once per registry (connections) or per trust (HTTP client, TLS context).
@Suite("Upstream sharing")
struct UpstreamSharingTests {
    /// A self-signed certificate, as a connector's `spec.tls.caBundle` holds (only parsed here).
    static let privateAuthority = """
        -----BEGIN CERTIFICATE-----
        MIIBpTCCAUugAwIBAgIUb1uxJa2sfGjJwNMzRbu2HDRyZkgwCgYIKoZIzj0EAwIw
        JzElMCMGA1UEAwwccmVnaXN0cnkuZXhhbXBsZS5jb20gdGVzdCBDQTAgFw0yNjEx
        MzAwNDE0MzRaGA8yMTI2MTEwNjA0MTQzNFowJzElMCMGA1UEAwwccmVnaXN0cnku
        ZXhhbXBsZS5jb20gdGVzdCBDQTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABE0F
        Q/vMsUtsVZYyq4Be1M/r+vQw1PIb6pIEXKME/lWSTS7OQ7C1RcKbaog6cED9mdqQ
        Jm2CluLN/TUV10A0NxujUzBRMB0GA1UdDgQWBBRT7csRXuWIx5tv1O99Z+kARtVQ
        NjAfBgNVHSMEGDAWgBRT7csRXuWIx5tv1O99Z+kARtVQNjAPBgNVHRMBAf8EBTAD
        AQH/MAoGCCqGSM49BAMCA0gAMEUCIFv1Av/vivWP1MX0/6sV3PnOIaNc3ZjAMZXP
        dhiG8vl2AiEA62s8GEO9HllJPCJR9qD1VELCMcK7UEj6dqHQSOGjUO4=
        -----END CERTIFICATE-----
        """

    static func connector(_ name: String, _ address: String, trusting pem: String? = nil) throws -> Connector {
        Connector(
            id: try ConnectorID(namespace: "team-\(name)", name: name), address: try RegistryAddress(parsing: address),
            credentials: RegistryCredentials(username: "robot$\(name)", password: "secret-\(name)"),
            trustedCertificatesPEM: pem)
    }

    @Test func connectorsToOneRegistryWithOneTrustShareItsConnections() async throws {
        let catalog = ConnectorCatalog([
            try Self.connector("a", "https://harbor.example.com"),
            try Self.connector("b", "https://harbor.example.com"),
            try Self.connector("c", "https://harbor.example.com:8443"),
            try Self.connector("d", "http://harbor.example.com"),
            try Self.connector("e", "https://harbor.example.com", trusting: Self.privateAuthority),
            try Self.connector("f", "https://harbor.example.com", trusting: Self.privateAuthority),
        ])
        let proxy = try ConnectorProxy(
            catalog: catalog, verifier: ProxyTokenVerifier(keys: [ProxyTokenSigner().verificationKey]),
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        var upstreams: [String: ConnectorProxy.Upstream] = [:]
        for name in ["a", "b", "c", "d", "e", "f"] {
            upstreams[name] = proxy.snapshot.upstreams[try ConnectorID(namespace: "team-\(name)", name: name)]
        }
        await proxy.shutdown()
        let (a, b, c, d, e, f) = (
            try #require(upstreams["a"]), try #require(upstreams["b"]), try #require(upstreams["c"]),
            try #require(upstreams["d"]), try #require(upstreams["e"]), try #require(upstreams["f"])
        )
        #expect(a.reads === b.reads)
        #expect(a.storage === b.storage)
        // Another port or scheme is another registry.
        #expect(a.reads !== c.reads)
        #expect(a.reads !== d.reads)
        #expect(a.storage !== c.storage)
        // One HTTP client for the system's trust, another for the private authority's.
        #expect(a.http === c.http && a.http === d.http)
        #expect(e.http === f.http && e.http !== a.http)
        // The same registry trusted differently is not shared.
        #expect(e.reads === f.reads)
        #expect(e.reads !== a.reads)
        #expect(e.storage !== a.storage)
    }
}
