import Crypto
public import Foundation

/// An Ed25519 key pair that mints proxy tokens, stored as a JSON Web Key (RFC 8037).
public struct ProxyTokenSigner: Sendable {
    /// The key identifier, carried in each token's `kid` header.
    public let keyID: String
    let key: Curve25519.Signing.PrivateKey

    /// A new random key.
    public init() {
        key = Curve25519.Signing.PrivateKey()
        keyID = JWK.thumbprint(key.publicKey)
    }

    /// Reads a signing key from its JWK file.
    public init(contentsOf url: URL) throws(ProxyTokenError) {
        let jwk = try JWK.read(url)
        guard let d = jwk.d, let raw = Base64URL.decode(d), let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: raw)
        else {
            throw ProxyTokenError("\(url.path) is not an Ed25519 signing key (a JWK with \"d\")")
        }
        self.key = key
        self.keyID = jwk.kid ?? JWK.thumbprint(key.publicKey)
    }

    /// The matching verification key.
    public var verificationKey: ProxyTokenVerificationKey {
        ProxyTokenVerificationKey(keyID: keyID, key: key.publicKey)
    }

    /// The signing key as a JWK document (holds the private key: store it with mode 0600).
    public var jwk: Data { JWK.encode(key.publicKey, privateKey: key, kid: keyID) }

    /// A signed token carrying `claims`.
    public func sign(_ claims: ProxyTokenClaims) -> String {
        let header = #"{"alg":"EdDSA","kid":"\#(keyID)","typ":"JWT"}"#
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let payload = try! encoder.encode(claims)
        let input = Base64URL.encode(Data(header.utf8)) + "." + Base64URL.encode(payload)
        let signature = try! key.signature(for: Data(input.utf8))
        return input + "." + Base64URL.encode(signature)
    }
}

/// A public key that verifies proxy tokens.
public struct ProxyTokenVerificationKey: Sendable {
    /// The key identifier.
    public let keyID: String
    let key: Curve25519.Signing.PublicKey

    /// The key as a JWK document.
    public var jwk: Data { JWK.encode(key, privateKey: nil, kid: keyID) }

    /// Reads a verification key (or the public half of a signing key) from a JWK file.
    public init(contentsOf url: URL) throws(ProxyTokenError) {
        let jwk = try JWK.read(url)
        guard let raw = Base64URL.decode(jwk.x), let key = try? Curve25519.Signing.PublicKey(rawRepresentation: raw) else {
            throw ProxyTokenError("\(url.path) is not an Ed25519 JWK")
        }
        self.key = key
        self.keyID = jwk.kid ?? JWK.thumbprint(key)
    }

    init(keyID: String, key: Curve25519.Signing.PublicKey) {
        self.keyID = keyID
        self.key = key
    }
}

/// Checks proxy tokens against a set of verification keys (several, for rotation).
public struct ProxyTokenVerifier: Sendable {
    let keys: [String: Curve25519.Signing.PublicKey]

    /// A verifier trusting `keys`.
    public init(keys: [ProxyTokenVerificationKey]) {
        self.keys = Dictionary(keys.map { ($0.keyID, $0.key) }, uniquingKeysWith: { first, _ in first })
    }

    /// This verifier trusting `key` too.
    public func trusting(_ key: ProxyTokenVerificationKey) -> ProxyTokenVerifier {
        var keys = keys
        keys[key.keyID] = key.key
        return ProxyTokenVerifier(keys: keys)
    }

    private init(keys: [String: Curve25519.Signing.PublicKey]) {
        self.keys = keys
    }

    /// Loads every `.jwk`/`.json` key at `path` (a file or a directory).
    public static func load(from path: String) throws(ProxyTokenError) -> ProxyTokenVerifier {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw ProxyTokenError("\(path) does not exist")
        }
        let files =
            isDirectory.boolValue
            ? ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [])
                .filter { $0.hasSuffix(".jwk") || $0.hasSuffix(".json") }.sorted()
                .map { URL(fileURLWithPath: path).appendingPathComponent($0) }
            : [URL(fileURLWithPath: path)]
        var keys: [ProxyTokenVerificationKey] = []
        for file in files { keys.append(try ProxyTokenVerificationKey(contentsOf: file)) }
        guard !keys.isEmpty else { throw ProxyTokenError("no verification keys in \(path)") }
        return ProxyTokenVerifier(keys: keys)
    }

    /// The claims of a token whose signature, audience and validity period check out.
    public func verify(_ token: String, now: Date = Date()) throws(ProxyTokenError) -> ProxyTokenClaims {
        let jws = try CompactJWS(token)
        guard jws.algorithm == "EdDSA" else { throw ProxyTokenError("the token is not signed with EdDSA") }
        let candidates = jws.keyID.flatMap { keys[$0].map { [$0] } } ?? Array(keys.values)
        guard candidates.contains(where: { $0.isValidSignature(jws.signature, for: jws.signingInput) }) else {
            throw ProxyTokenError("the token's signature does not match any trusted key")
        }
        let claims = try ProxyTokenClaims(payload: jws.payload)
        try claims.checkValidity(at: now)
        return claims
    }
}

/// Ed25519 keys as JSON Web Keys (RFC 8037), identified by their RFC 7638 thumbprint.
enum JWK {
    struct Document: Codable {
        var kty: String
        var crv: String
        var x: String
        var d: String?
        var kid: String?
    }

    static func read(_ url: URL) throws(ProxyTokenError) -> Document {
        guard let data = try? Data(contentsOf: url) else { throw ProxyTokenError("cannot read \(url.path)") }
        guard let document = try? JSONDecoder().decode(Document.self, from: data),
            document.kty == "OKP", document.crv == "Ed25519"
        else { throw ProxyTokenError("\(url.path) is not an Ed25519 JWK") }
        return document
    }

    static func encode(_ publicKey: Curve25519.Signing.PublicKey, privateKey: Curve25519.Signing.PrivateKey?, kid: String) -> Data
    {
        let document = Document(
            kty: "OKP", crv: "Ed25519", x: Base64URL.encode(publicKey.rawRepresentation),
            d: privateKey.map { Base64URL.encode($0.rawRepresentation) }, kid: kid)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        return try! encoder.encode(document) + Data("\n".utf8)
    }

    static func thumbprint(_ key: Curve25519.Signing.PublicKey) -> String {
        let canonical = #"{"crv":"Ed25519","kty":"OKP","x":"\#(Base64URL.encode(key.rawRepresentation))"}"#
        return Base64URL.encode(Data(SHA256.hash(data: Data(canonical.utf8))))
    }
}
