import Logging
@testable import OCIConnectorProxy
import OCIConnectors
import OCIProxyToken
import OCIReference
import Testing

/// Connectors are many, registries few: what does not depend on a connector's credentials is
/// set up once per registry (connections) or per trust (HTTP client, TLS context).
@Suite("Upstream sharing")
struct UpstreamSharingTests {
    static func connector(_ name: String, _ address: String, password: String) throws -> Connector {
        Connector(id: try ConnectorID(namespace: "team-\(name)", name: name), address: try RegistryAddress(parsing: address),
                  credentials: RegistryCredentials(username: "robot$\(name)", password: password))
    }

    @Test func connectorsToOneRegistryShareItsConnections() async throws {
        let catalog = ConnectorCatalog([
            try Self.connector("a", "https://harbor.example.com", password: "secret-a"),
            try Self.connector("b", "https://harbor.example.com", password: "secret-b"),
            try Self.connector("c", "https://harbor.example.com:8443", password: "secret-c"),
            try Self.connector("d", "http://harbor.example.com", password: "secret-d"),
        ])
        let proxy = try ConnectorProxy(catalog: catalog, verifier: ProxyTokenVerifier(keys: [ProxyTokenSigner().verificationKey]),
                                       logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        let upstream = { (name: String) throws -> ConnectorProxy.Upstream in
            try #require(proxy.upstreams[try ConnectorID(namespace: "team-\(name)", name: name)])
        }
        let (a, b, c, d) = (try upstream("a"), try upstream("b"), try upstream("c"), try upstream("d"))
        #expect(a.reads === b.reads)
        #expect(a.storage === b.storage)
        // Another port or scheme is another registry.
        #expect(a.reads !== c.reads)
        #expect(a.reads !== d.reads)
        #expect(a.storage !== c.storage)
        // One HTTP client for all: they trust the same certificates.
        #expect(a.http === c.http && a.http === d.http)
        // Credentials stay the connector's own.
        #expect(a.client.connector.credentials != b.client.connector.credentials)
        await proxy.shutdown()
    }
}
