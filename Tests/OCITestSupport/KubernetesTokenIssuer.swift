import Crypto
import Foundation
import Hummingbird
import Logging
import _CryptoExtras

/// A stand-in for a cluster's service account token issuer, on loopback: it signs tokens shaped
/// as kube-apiserver's (RS256 with RSA keys, ES256 with P-256 keys) and serves OIDC discovery
/// (`/.well-known/openid-configuration`) and the key set (`/openid/v1/jwks`) as the API server
/// does. Keys can rotate during a test; it counts how often its key set is read.
public final class KubernetesTokenIssuer: Sendable {
    /// A signing key and its `kid`.
    enum SigningKey {
        case rsa(String, _RSA.Signing.PrivateKey)
        case ec(String, P256.Signing.PrivateKey)

        var kid: String {
            switch self {
            case .rsa(let kid, _), .ec(let kid, _): kid
            }
        }

        var jwk: [String: String] {
            switch self {
            case .rsa(let kid, let key):
                let primitives = try! key.publicKey.getKeyPrimitives()
                return [
                    "kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid, "n": base64URL(primitives.modulus),
                    "e": base64URL(primitives.publicExponent),
                ]
            case .ec(let kid, let key):
                let raw = key.publicKey.rawRepresentation
                return [
                    "kty": "EC", "alg": "ES256", "use": "sig", "kid": kid, "crv": "P-256", "x": base64URL(raw.prefix(32)),
                    "y": base64URL(raw.suffix(32)),
                ]
            }
        }
    }

    /// The issuer URL, as tokens carry it in `iss`: `http://127.0.0.1:PORT`.
    public let url: String
    private let keys: Locked<[SigningKey]>
    private let keySetReads: Locked<Int>
    private let task: Task<Void, any Error>

    /// How many times its key set was read.
    public var keySetRequests: Int { keySetReads.withLock { $0 } }

    /// The key set document, as `kubectl get --raw /openid/v1/jwks` prints it.
    public var jwks: Data {
        let set = ["keys": keys.withLock { $0.map(\.jwk) }]
        return try! JSONSerialization.data(withJSONObject: set, options: .sortedKeys)
    }

    /// Writes the key set to a file, for `--service-account-jwks ISSUER=FILE`.
    public func writeJWKS(to path: String) throws {
        try jwks.write(to: URL(fileURLWithPath: path))
    }

    /// Starts an issuer with an RSA and a P-256 key.
    public static func start() async throws -> KubernetesTokenIssuer {
        let keys = Locked<[SigningKey]>([try newKey(rsa: true), try newKey(rsa: false)])
        let reads = Locked(0)
        let router = Router()
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        let urlBox = Locked("")
        router.get(".well-known/openid-configuration") { _, _ -> Response in
            let url = urlBox.withLock { $0 }
            let document: [String: Any] = [
                "issuer": url, "jwks_uri": url + "/openid/v1/jwks", "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"], "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            ]
            return Response(
                status: .ok, headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: document))))
        }
        router.get("openid/v1/jwks") { _, _ -> Response in
            reads.withLock { $0 += 1 }
            let set = ["keys": keys.withLock { $0.map(\.jwk) }]
            return Response(
                status: .ok, headers: [.contentType: "application/jwk-set+json"],
                body: .init(byteBuffer: ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: set))))
        }
        let application = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0), serverName: nil),
            onServerRunning: { channel in
                continuation.yield(channel.localAddress?.port ?? 0)
                continuation.finish()
            },
            logger: Logger(label: "kubernetes-token-issuer", factory: { _ in SwiftLogNoOpLogHandler() }))
        let task = Task {
            defer { continuation.finish() }
            try await withTaskExecutorPreference(DedicatedExecutor.shared) { try await application.run() }
        }
        var port = 0
        for await value in ports { port = value }
        guard port != 0 else { throw TestSupportError("the token issuer did not start") }
        let url = "http://127.0.0.1:\(port)"
        urlBox.withLock { $0 = url }
        return KubernetesTokenIssuer(url: url, keys: keys, keySetReads: reads, task: task)
    }

    private init(url: String, keys: Locked<[SigningKey]>, keySetReads: Locked<Int>, task: Task<Void, any Error>) {
        self.url = url
        self.keys = keys
        self.keySetReads = keySetReads
        self.task = task
    }

    public func stop() { task.cancel() }

    private static func newKey(rsa: Bool) throws -> SigningKey {
        let kid = UUID().uuidString.lowercased()
        return rsa ? .rsa(kid, try _RSA.Signing.PrivateKey(keySize: .bits2048)) : .ec(kid, P256.Signing.PrivateKey())
    }

    /// Replaces the key of one kind with a new one: tokens signed before no longer verify once
    /// a verifier has read the new set.
    public func rotate(rsa: Bool = true) throws {
        let key = try Self.newKey(rsa: rsa)
        keys.withLock { keys in
            keys.removeAll { if case .rsa = $0 { return rsa } else { return !rsa } }
            keys.append(key)
        }
    }

    /// A service account token as kubelet projects it: `namespace`/`name`, for `audiences`,
    /// valid for `lifetime` seconds from `issuedAt`, signed with `alg` (`RS256` or `ES256`).
    /// `changes` alters the claims afterwards (set a value to `NSNull()` to remove it).
    public func token(
        namespace: String, serviceAccount name: String, audiences: [String] = ["oci-connector-proxy"], lifetime: Int = 3600,
        issuedAt: Date = Date(), alg: String = "RS256", pod: String? = "build-x7k2", issuer: String? = nil,
        changes: [String: Any] = [:]
    ) -> String {
        let now = Int(issuedAt.timeIntervalSince1970)
        var kubernetes: [String: Any] = [
            "namespace": namespace, "serviceaccount": ["name": name, "uid": UUID().uuidString.lowercased()],
        ]
        if let pod { kubernetes["pod"] = ["name": pod, "uid": UUID().uuidString.lowercased()] }
        var claims: [String: Any] = [
            "iss": issuer ?? url, "sub": "system:serviceaccount:\(namespace):\(name)", "aud": audiences, "iat": now,
            "nbf": now, "exp": now + lifetime, "kubernetes.io": kubernetes,
        ]
        for (key, value) in changes {
            if value is NSNull { claims.removeValue(forKey: key) } else { claims[key] = value }
        }
        let token = sign(claims: claims, alg: alg)
        SecretEvidence.record(token)
        return token
    }

    /// Signs `claims` with the current key for `alg` (`RS256`, `ES256`), or forges: `none`
    /// (no signature), `HS256` (an HMAC keyed with the RSA key's public JWK, the classic
    /// confusion attack), or `header` fields of one's own.
    public func sign(claims: [String: Any], alg: String, header extra: [String: String] = [:]) -> String {
        let current = keys.withLock { $0 }
        let rsa = current.first { if case .rsa = $0 { true } else { false } }!
        let ec = current.first { if case .ec = $0 { true } else { false } }!
        let kid = alg == "ES256" ? ec.kid : rsa.kid
        var header: [String: String] = ["alg": alg, "typ": "JWT", "kid": kid]
        header.merge(extra) { _, new in new }
        let input =
            base64URL(try! JSONSerialization.data(withJSONObject: header, options: .sortedKeys)) + "."
            + base64URL(try! JSONSerialization.data(withJSONObject: claims, options: .sortedKeys))
        let data = Data(input.utf8)
        let signature: Data
        switch (alg, rsa, ec) {
        case ("RS256", .rsa(_, let key), _):
            signature = try! key.signature(for: data, padding: .insecurePKCS1v1_5).rawRepresentation
        case ("ES256", _, .ec(_, let key)):
            signature = try! key.signature(for: data).rawRepresentation
        case ("HS256", _, _):
            let secret = SymmetricKey(data: try! JSONSerialization.data(withJSONObject: rsa.jwk, options: .sortedKeys))
            signature = Data(HMAC<SHA256>.authenticationCode(for: data, using: secret))
        default:
            signature = Data()
        }
        return input + "." + base64URL(signature)
    }
}

private func base64URL(_ data: some DataProtocol) -> String {
    Data(data).base64EncodedString()
        .replacingOccurrences(of: "+", with: "-")
        .replacingOccurrences(of: "/", with: "_")
        .replacingOccurrences(of: "=", with: "")
}
