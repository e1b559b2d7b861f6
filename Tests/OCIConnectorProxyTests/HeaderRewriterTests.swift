import Foundation
import OCIBlobForwarder
import OCIConnectorProxy
import OCIProxyToken
import OCIReference
import Testing

@Suite("Rewriting upstream locations for the client")
struct HeaderRewriterTests {
    let rewriter = HeaderRewriter(
        clientOrigin: "http://proxy.example:8080", repositoryPrefix: "namespaces/team-a/connectors/harbor",
        upstream: try! RegistryAddress(parsing: "https://harbor.example.com"))

    static let locations: [(String, String?)] = [
        // Relative, as distribution sends it.
        (
            "/v2/team/app/blobs/uploads/5b9a?_state=abc%3D&x=1",
            "http://proxy.example:8080/v2/namespaces/team-a/connectors/harbor/team/app/blobs/uploads/5b9a?_state=abc%3D&x=1"
        ),
        // Absolute on the upstream, with and without its default port, any case.
        (
            "https://harbor.example.com/v2/team/app/blobs/uploads/5b9a?_state=s",
            "http://proxy.example:8080/v2/namespaces/team-a/connectors/harbor/team/app/blobs/uploads/5b9a?_state=s"
        ),
        (
            "https://HARBOR.example.com:443/v2/team/app/blobs/sha256:aa",
            "http://proxy.example:8080/v2/namespaces/team-a/connectors/harbor/team/app/blobs/sha256:aa"
        ),
        // Other origins (object storage, a downgrade, another port) are left alone.
        ("https://s3.example.com/bucket/blob?X-Amz-Signature=1", nil),
        ("http://harbor.example.com/v2/team/app/blobs/uploads/1", nil),
        ("https://harbor.example.com:8443/v2/team/app/blobs/uploads/1", nil),
        ("/not-the-api", nil),
    ]

    @Test(arguments: locations)
    func location(_ upstream: String, _ expected: String?) {
        #expect(rewriter.location(upstream) == expected)
    }

    @Test func hostFormKeepsTheRepository() {
        let hostForm = HeaderRewriter(
            clientOrigin: "http://c-harbor.team-a.svc.cluster.local", repositoryPrefix: "",
            upstream: try! RegistryAddress(parsing: "https://harbor.example.com"))
        #expect(
            hostForm.location("/v2/team/app/blobs/uploads/1?_state=s")
                == "http://c-harbor.team-a.svc.cluster.local/v2/team/app/blobs/uploads/1?_state=s")
    }

    @Test func links() {
        #expect(
            rewriter.link(#"</v2/team/app/tags/list?n=2&last=b>; rel="next""#)
                == #"<http://proxy.example:8080/v2/namespaces/team-a/connectors/harbor/team/app/tags/list?n=2&last=b>; rel="next""#
        )
        #expect(
            rewriter.link(#"</v2/_catalog?last=x&n=1>; rel="next""#)
                == #"<http://proxy.example:8080/v2/namespaces/team-a/connectors/harbor/_catalog?last=x&n=1>; rel="next""#)
        #expect(
            rewriter.link(#"<https://elsewhere.example/x>; rel="alternate""#)
                == #"<https://elsewhere.example/x>; rel="alternate""#)
    }
}

@Suite("Proxy tokens")
struct ProxyTokenTests {
    let signer = ProxyTokenSigner()

    @Test func signedTokensVerifyAndCarryTheirScope() throws {
        let token = signer.sign(
            ProxyTokenClaims(
                subject: "ci", connectors: ["team-a/harbor"], actions: ["pull", "push"], repositories: ["team/*", "base/**"],
                lifetime: 60))
        let claims = try ProxyTokenVerifier(keys: [signer.verificationKey]).verify(token)
        #expect(claims.allows(connector: "team-a/harbor", action: "pull", repository: "team/app"))
        #expect(claims.allows(connector: "team-a/harbor", action: "push", repository: "base/images/go"))
        #expect(!claims.allows(connector: "team-a/harbor", action: "push", repository: "team/app/nested"))
        #expect(!claims.allows(connector: "team-a/harbor", action: "delete", repository: "team/app"))
        #expect(!claims.allows(connector: "team-b/harbor", action: "pull", repository: "team/app"))
        #expect(!claims.allows(connector: "team-a/harbor", action: "pull", repository: "other/app"))
    }

    @Test func rotationAcceptsAnyTrustedKey() throws {
        let old = ProxyTokenSigner()
        let verifier = ProxyTokenVerifier(keys: [signer.verificationKey, old.verificationKey])
        for key in [signer, old] {
            _ = try verifier.verify(
                key.sign(ProxyTokenClaims(subject: "s", connectors: ["a/b"], actions: ["pull"], lifetime: 60)))
        }
    }

    @Test func refusals() throws {
        let verifier = ProxyTokenVerifier(keys: [signer.verificationKey])
        let good = signer.sign(ProxyTokenClaims(subject: "s", connectors: ["a/b"], actions: ["pull"], lifetime: 60))
        let expired = signer.sign(
            ProxyTokenClaims(
                subject: "s", connectors: ["a/b"], actions: ["pull"], lifetime: 60,
                now: Date(timeIntervalSinceNow: -3600)))
        let future = signer.sign(
            ProxyTokenClaims(
                subject: "s", connectors: ["a/b"], actions: ["pull"], lifetime: 60,
                now: Date(timeIntervalSinceNow: 3600)))
        let foreign = ProxyTokenSigner().sign(
            ProxyTokenClaims(subject: "s", connectors: ["a/b"], actions: ["pull"], lifetime: 60))
        var parts = good.split(separator: ".").map(String.init)
        parts[1] = parts[1].replacingOccurrences(of: "a", with: "b")
        let tampered = parts.joined(separator: ".")
        // The same claims and signature under a header of another algorithm, or of none.
        func header(_ json: String) -> String {
            Data(json.utf8).base64EncodedString().replacingOccurrences(of: "=", with: "")
                .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        }
        let unsigned = ([header(#"{"alg":"none"}"#)] + parts.dropFirst()).joined(separator: ".")
        let noAlgorithm = ([header(#"{"typ":"JWT"}"#)] + parts.dropFirst()).joined(separator: ".")
        for (token, reason) in [
            (expired, "expired"), (future, "not valid yet"), (foreign, "signature"),
            (tampered, "signature"), ("a.b", "not a JWT"), ("", "not a JWT"), ("a.b.c.d", "not a JWT"),
            (unsigned, "not signed with EdDSA"), (noAlgorithm, "names no algorithm"),
        ] {
            do {
                _ = try verifier.verify(token)
                Issue.record("accepted: \(reason)")
            } catch {
                #expect(error.reason.contains(reason))
                #expect(token.isEmpty || !error.reason.contains(token))
            }
        }
    }

    @Test func keysRoundTripThroughJWKFiles() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("jwk-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try signer.jwk.write(to: directory.appendingPathComponent("signing.jwk"))
        try signer.verificationKey.jwk.write(to: directory.appendingPathComponent("verification.jwk"))
        let reloaded = try ProxyTokenSigner(contentsOf: directory.appendingPathComponent("signing.jwk"))
        #expect(reloaded.keyID == signer.keyID)
        let publicKey = try String(contentsOf: directory.appendingPathComponent("verification.jwk"), encoding: .utf8)
        #expect(!publicKey.contains("\"d\""))
        let verifier = try ProxyTokenVerifier.load(from: directory.path)
        _ = try verifier.verify(
            reloaded.sign(ProxyTokenClaims(subject: "s", connectors: ["a/b"], actions: ["pull"], lifetime: 60)))
    }
}

@Suite("Recognising hop-by-hop header names")
struct HopByHopNameTests {
    static let names: [(String, Bool)] = [
        ("Connection", true), ("connection", true), ("CONNECTION", true), ("Keep-Alive", true),
        ("Transfer-Encoding", true), ("TE", true), ("Content-Length", true), ("Authorization", true),
        ("Proxy-Authorization", true), ("Host", true), ("upgrade", true), ("Trailer", true),
        // Near misses: a prefix, a longer name, another header of the same length.
        ("Connectio", false), ("Connections", false), ("Content-Type", false), ("Content-Lengtx", false),
        ("Docker-Content-Digest", false), ("Location", false), ("T", false), ("", false),
        // Case folding is ASCII only: a byte that differs from "-" by the case bit is not "-".
        ("Keep\u{0D}Alive", false), ("Kéép-Alive", false),
    ]

    @Test(arguments: names)
    func matchesTheSetInAnyCase(_ name: String, _ expected: Bool) {
        #expect(HeaderRewriter.isHopByHop(name) == expected)
        #expect(HeaderRewriter.hopByHop.contains(name.lowercased()) == expected)
    }

    @Test(arguments: HeaderRewriter.hopByHop.sorted())
    func recognisesEveryNameOfTheSet(_ name: String) {
        #expect(HeaderRewriter.isHopByHop(name))
        #expect(HeaderRewriter.isHopByHop(name.uppercased()))
        #expect(!HeaderRewriter.isHopByHop(name + "x"))
        #expect(!HeaderRewriter.isHopByHop(String(name.dropLast()) + "x"))
    }
}
