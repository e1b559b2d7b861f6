import Foundation

/// A token in the JWS compact serialization (`header.payload.signature`, RFC 7515) taken apart:
/// all the verifier reads of a token before its signature is checked. It holds no key and checks
/// nothing cryptographic, so it can be fuzzed on its own (`Tests/Fuzz/TokenFuzz.swift`).
struct CompactJWS {
    /// The header's `alg`.
    let algorithm: String
    /// The header's `kid`, if any.
    let keyID: String?
    /// What the signature is over: the token up to its second `.`.
    let signingInput: Data
    let payload: Data
    let signature: Data

    init(_ token: String) throws(ProxyTokenError) {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let headerData = Base64URL.decode(parts[0]), let payload = Base64URL.decode(parts[1]),
            let signature = Base64URL.decode(parts[2]),
            let header = try? JSONSerialization.jsonObject(with: headerData) as? [String: Any]
        else { throw ProxyTokenError("the token is not a JWT") }
        guard let algorithm = header["alg"] as? String else { throw ProxyTokenError("the token names no algorithm") }
        self.algorithm = algorithm
        self.keyID = header["kid"] as? String
        self.signingInput = Data(token.utf8.prefix(parts[0].utf8.count + 1 + parts[1].utf8.count))
        self.payload = payload
        self.signature = signature
    }
}

extension ProxyTokenClaims {
    /// The claims a verified token's payload holds.
    init(payload: Data) throws(ProxyTokenError) {
        guard let claims = try? JSONDecoder().decode(ProxyTokenClaims.self, from: payload) else {
            throw ProxyTokenError("the token's claims are not those of a proxy token")
        }
        self = claims
    }
}

/// RFC 7515 base64url without padding.
enum Base64URL {
    static func encode(_ data: some DataProtocol) -> String {
        Data(data).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func decode(_ text: some StringProtocol) -> Data? {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        guard !base64.contains("=") else { return nil }
        while base64.utf8.count % 4 != 0 { base64 += "=" }
        return Data(base64Encoded: base64)
    }
}
