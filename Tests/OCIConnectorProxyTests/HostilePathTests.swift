import Foundation
import Logging
import NIOCore
import NIOEmbedded
import OCIConnectors
import OCIProxyToken
import OCIReference
import Testing

@testable import OCIConnectorProxy

/// Paths and methods a hostile or broken client sends, with a token for `app` alone: each is
/// refused by the proxy itself with a clear 4xx in the registry's error format, and none reaches
/// the upstream (which would answer nothing here: the test reads only what is written at once).
@Suite("Hostile paths and methods")
struct HostilePathTests {
    static let prefix = "/v2/namespaces/team/connectors/hub"

    /// (method, path, status, code)
    static let cases: [(String, String, String, String)] = [
        ("GET", "\(prefix)/app/../other/manifests/v1", "400", "NAME_INVALID"),
        ("GET", "\(prefix)/app/%2e%2e/other/manifests/v1", "400", "NAME_INVALID"),
        ("GET", "\(prefix)/app%2fother/manifests/v1", "400", "NAME_INVALID"),
        ("GET", "\(prefix)/app/./manifests/v1", "400", "NAME_INVALID"),
        ("GET", "\(prefix)//app/manifests/v1", "400", "NAME_INVALID"),
        ("GET", "\(prefix)/app;type=a/manifests/v1", "400", "NAME_INVALID"),
        ("GET", "\(prefix)/APP/manifests/v1", "400", "NAME_INVALID"),
        ("GET", "\(prefix)/other/manifests/v1", "403", "DENIED"),
        ("GET", "/v2/namespaces/team/connectors/nope/app/manifests/v1", "403", "DENIED"),
        ("GET", "/v2/namespaces/Team/connectors/hub/app/manifests/v1", "404", "NAME_UNKNOWN"),
        ("GET", "\(prefix)/app/nonsense/v1", "404", "UNSUPPORTED"),
        ("GET", "/v3/namespaces/team/connectors/hub/app/manifests/v1", "404", "UNSUPPORTED"),
        ("PROPFIND", "\(prefix)/app/manifests/v1", "405", "UNSUPPORTED"),
        ("TRACE", "\(prefix)/app/manifests/v1", "405", "UNSUPPORTED"),
        ("OPTIONS", "\(prefix)/app/manifests/v1", "405", "UNSUPPORTED"),
        ("POST", "\(prefix)/app/manifests/v1", "405", "UNSUPPORTED"),
        ("PUT", "\(prefix)/app/blobs/sha256:\(String(repeating: "a", count: 64))", "405", "UNSUPPORTED"),
        ("PATCH", "\(prefix)/app/tags/list", "405", "UNSUPPORTED"),
    ]

    @Test(arguments: cases) func refusedBeforeTheUpstream(method: String, path: String, status: String, code: String) throws {
        let signer = ProxyTokenSigner()
        let connector = Connector(
            id: try ConnectorID(namespace: "team", name: "hub"), address: try RegistryAddress(parsing: "http://127.0.0.1:9"))
        let proxy = try ConnectorProxy(
            catalog: ConnectorCatalog([connector]), verifier: ProxyTokenVerifier(keys: [signer.verificationKey]),
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        defer { Task { await proxy.shutdown() } }
        let token = signer.sign(
            ProxyTokenClaims(
                subject: "ci", connectors: ["team/hub"], actions: ["pull", "push", "delete"], repositories: ["app"],
                lifetime: 600))
        let (channel, _) = try ClientConnectionTests.channel(proxy)
        try channel.writeInbound(
            ByteBuffer(
                string: "\(method) \(path) HTTP/1.1\r\nHost: p\r\nAuthorization: Bearer \(token)\r\nContent-Length: 0\r\n\r\n"))
        channel.embeddedEventLoop.run()
        let written = try ClientConnectionTests.written(channel)
        #expect(written.hasPrefix("HTTP/1.1 \(status) "), "\(method) \(path): \(written.prefix(200))")
        #expect(written.contains(#"{"errors":[{"code":"\#(code)""#), "\(method) \(path): \(written)")
    }
}
