import Foundation
import OCITestSupport
import OCIWorkloadIdentity
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Reads a loopback URL, as the proxy's own fetcher does.
let loopbackFetch: ServiceAccountTokenVerifier.Fetcher = { url in
    let (data, response) = try await URLSession.shared.data(from: URL(string: url)!)
    guard (response as? HTTPURLResponse)?.statusCode == 200 else { throw ServiceAccountTokenError("\(url) failed") }
    return data
}

@Suite("Service account tokens, verified against a cluster's keys")
struct ServiceAccountTokenVerifierTests {
    static func verifier(_ issuer: KubernetesTokenIssuer, keys: ServiceAccountIssuer.KeySource = .discovery)
        -> ServiceAccountTokenVerifier
    {
        ServiceAccountTokenVerifier(issuers: [ServiceAccountIssuer(url: issuer.url, keys: keys)], fetch: loopbackFetch)
    }

    @Test(arguments: ["RS256", "ES256"]) func acceptsProjectedTokensFoundByDiscovery(alg: String) async throws {
        let issuer = try await KubernetesTokenIssuer.start()
        defer { issuer.stop() }
        let verifier = Self.verifier(issuer)
        let identity = try await verifier.verify(issuer.token(namespace: "team-a", serviceAccount: "builder", alg: alg))
        #expect(identity.username == "system:serviceaccount:team-a:builder")
        #expect(identity.groups.contains("system:serviceaccounts:team-a"))
        #expect(identity.podName == "build-x7k2")
        #expect(identity.issuer == issuer.url)
    }

    @Test func readsKeysFromAFileOrAURL() async throws {
        let issuer = try await KubernetesTokenIssuer.start()
        defer { issuer.stop() }
        let path = try Loopback.temporaryDirectory("jwks").appendingPathComponent("jwks.json").path
        try issuer.writeJWKS(to: path)
        let token = issuer.token(namespace: "ns", serviceAccount: "sa")
        let fromFile = Self.verifier(issuer, keys: .file(path))
        #expect(try await fromFile.verify(token).name == "sa")
        let fromURL = Self.verifier(issuer, keys: .url(issuer.url + "/openid/v1/jwks"))
        #expect(try await fromURL.verify(token).name == "sa")
        let parsed = try ServiceAccountIssuer(jwksArgument: "https://k8s.example.com=\(path)")
        #expect(parsed == ServiceAccountIssuer(url: "https://k8s.example.com", keys: .file(path)))
        #expect(throws: ServiceAccountTokenError.self) { try ServiceAccountIssuer(jwksArgument: "no-equals") }
    }

    /// Each refusal, with the reason the client is told.
    @Test func refusesWhatKubernetesWouldNotAccept() async throws {
        let issuer = try await KubernetesTokenIssuer.start()
        defer { issuer.stop() }
        let other = try await KubernetesTokenIssuer.start()
        defer { other.stop() }
        let verifier = Self.verifier(issuer)
        let now = Date()
        let hour: TimeInterval = 3600
        let cases: [(String, String, String)] = [
            ("wrong audience", issuer.token(namespace: "a", serviceAccount: "b", audiences: ["other"]), "audience"),
            (
                "the API server's audience",
                issuer.token(namespace: "a", serviceAccount: "b", audiences: ["https://kubernetes.default.svc.cluster.local"]),
                "audience"
            ),
            (
                "expired beyond the leeway",
                issuer.token(namespace: "a", serviceAccount: "b", lifetime: 600, issuedAt: now - hour), "expired"
            ),
            ("not yet valid", issuer.token(namespace: "a", serviceAccount: "b", issuedAt: now + hour), "not valid yet"),
            (
                "issued in the future",
                issuer.token(namespace: "a", serviceAccount: "b", changes: ["iat": Int(now.timeIntervalSince1970) + 600]),
                "future"
            ),
            ("no expiry", issuer.token(namespace: "a", serviceAccount: "b", changes: ["exp": NSNull()]), "no expiry"),
            ("alg none", issuer.sign(claims: ["iss": issuer.url], alg: "none"), "not accepted"),
            (
                "HS256 keyed with the public key",
                issuer.sign(claims: ["iss": issuer.url, "aud": ["oci-connector-proxy"]], alg: "HS256"), "not accepted"
            ),
            ("RS384", issuer.sign(claims: ["iss": issuer.url], alg: "RS384"), "not accepted"),
            ("unknown key", issuer.sign(claims: ["iss": issuer.url], alg: "RS256", header: ["kid": "made-up"]), "not one of"),
            (
                "ES256 header on the RSA key",
                issuer.sign(claims: ["iss": issuer.url], alg: "ES256", header: ["kid": Self.rsaKid(issuer)]), "does not match"
            ),
            ("unknown issuer", other.token(namespace: "a", serviceAccount: "b"), "not trusted"),
            (
                "issuer claimed but signed by another",
                other.token(namespace: "a", serviceAccount: "b", issuer: issuer.url), "not one of"
            ),
            (
                "no Kubernetes claim", issuer.token(namespace: "a", serviceAccount: "b", changes: ["kubernetes.io": NSNull()]),
                "no service account"
            ),
            (
                "subject of another account",
                issuer.token(namespace: "a", serviceAccount: "b", changes: ["sub": "system:serviceaccount:kube-system:admin"]),
                "subject"
            ),
            ("not a JWT", "s3cret-password", "not a JWT"),
        ]
        for (name, token, reason) in cases {
            do {
                _ = try await verifier.verify(token, now: now)
                Issue.record("\(name): accepted")
            } catch {
                #expect(error.reason.contains(reason), "\(name): \(error.reason)")
                #expect(!error.reason.contains(token), "\(name): the reason holds the token")
            }
        }
        // Within the leeway: accepted.
        let late = issuer.token(namespace: "a", serviceAccount: "b", lifetime: 600, issuedAt: now - 630)
        #expect(try await verifier.verify(late, now: now).name == "b")
    }

    static func rsaKid(_ issuer: KubernetesTokenIssuer) -> String {
        let set = try! JSONSerialization.jsonObject(with: issuer.jwks) as! [String: [[String: String]]]
        return set["keys"]!.first { $0["kty"] == "RSA" }!["kid"]!
    }

    /// A rotated key is found by reading the key set again on its unknown `kid`, but a flood of
    /// unknown `kid`s reads it at most once per minimum interval.
    @Test func rotatedKeysAreReadAgainAtABoundedRate() async throws {
        let issuer = try await KubernetesTokenIssuer.start()
        defer { issuer.stop() }
        let verifier = Self.verifier(issuer)
        let start = Date()
        _ = try await verifier.verify(issuer.token(namespace: "a", serviceAccount: "b"), now: start)
        #expect(issuer.keySetRequests == 1)
        try issuer.rotate()
        let rotated = issuer.token(namespace: "a", serviceAccount: "b")
        // Within the minimum interval: the unknown key is not looked for.
        await #expect(throws: ServiceAccountTokenError.self) { try await verifier.verify(rotated, now: start + 1) }
        #expect(issuer.keySetRequests == 1)
        // After it: read once, then found.
        #expect(try await verifier.verify(rotated, now: start + 11).name == "b")
        #expect(issuer.keySetRequests == 2)
        for index in 0..<50 {
            let forged = issuer.sign(claims: ["iss": issuer.url], alg: "RS256", header: ["kid": "made-up-\(index)"])
            _ = try? await verifier.verify(forged, now: start + 12)
        }
        #expect(issuer.keySetRequests == 2)
        // Keys are read again when stale, even when the kid is known.
        _ = try await verifier.verify(rotated, now: start + 400)
        #expect(issuer.keySetRequests == 3)
    }
}
