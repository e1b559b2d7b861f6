public import Foundation
import JWTKit

/// Verifies Kubernetes service account tokens offline, against the public keys of the clusters
/// it trusts.
///
/// A token is accepted only if all of these hold:
/// - its header's `alg` is `RS256` or `ES256` (what kube-apiserver signs with) and its `kid`
///   names a key of the issuer of the same kind: `none`, `HS256` signed with a public key and
///   every other algorithm are refused;
/// - its `iss` is one of the configured issuers, and the signature verifies with that issuer's key;
/// - its `aud` contains the proxy's audience (a token for the API server's audience is refused);
/// - `exp`, `nbf` and `iat` hold at the verifier's clock, with ``Configuration/leeway``;
/// - its `kubernetes.io` claim names a namespace and a service account, and its `sub` agrees.
public final class ServiceAccountTokenVerifier: Sendable {
    /// Reads a document at an `http(s)` URL: the discovery document or a JWKS.
    public typealias Fetcher = @Sendable (String) async throws -> Data

    /// Audience, leeway and how often keys are read.
    public struct Configuration: Sendable {
        /// What tokens must carry in `aud`.
        public var audience: String
        /// Seconds of clock difference tolerated on `exp`, `nbf` and `iat`.
        public var leeway: TimeInterval
        /// Keys are read again after this many seconds.
        public var keyRefreshInterval: TimeInterval
        /// An unknown `kid` makes keys be read again, but at most once per this many seconds.
        public var minimumRefreshInterval: TimeInterval

        /// The audience tokens are requested with by default.
        public static let defaultAudience = "oci-connector-proxy"

        /// Creates settings.
        public init(
            audience: String = defaultAudience, leeway: TimeInterval = 60, keyRefreshInterval: TimeInterval = 300,
            minimumRefreshInterval: TimeInterval = 10
        ) {
            self.audience = audience
            self.leeway = leeway
            self.keyRefreshInterval = keyRefreshInterval
            self.minimumRefreshInterval = minimumRefreshInterval
        }
    }

    /// The accepted signature algorithms.
    public static let algorithms: Set<String> = ["RS256", "ES256"]

    public let configuration: Configuration
    private let issuers: [String: IssuerKeySet]

    /// Trusts tokens of `issuers`, reading keys at URLs with `fetch`.
    public init(issuers: [ServiceAccountIssuer], configuration: Configuration = .init(), fetch: @escaping Fetcher) {
        self.configuration = configuration
        var sets: [String: IssuerKeySet] = [:]
        for issuer in issuers {
            sets[issuer.url] = IssuerKeySet(issuer: issuer, fetch: fetch, configuration: configuration)
        }
        self.issuers = sets
    }

    /// The issuers trusted, by URL.
    public var issuerURLs: [String] { issuers.keys.sorted() }

    /// Whether `token` is a JWT signed with an algorithm that service account tokens use: the
    /// ones to give to ``verify(_:now:)`` rather than to another verifier.
    public static func looksLikeServiceAccountToken(_ token: String) -> Bool {
        guard let header = try? Self.header(of: token), let alg = header.alg else { return false }
        return alg != "EdDSA"
    }

    /// The identity `token` proves, or why it proves none.
    public func verify(_ token: String, now: Date = Date()) async throws(ServiceAccountTokenError) -> ServiceAccountIdentity {
        let header = try Self.header(of: token)
        guard let alg = header.alg, Self.algorithms.contains(alg) else {
            throw ServiceAccountTokenError("algorithm \(header.alg ?? "(none)") is not accepted; only RS256 and ES256 are")
        }
        guard let kid = header.kid, !kid.isEmpty else { throw ServiceAccountTokenError("the token names no key (kid)") }
        guard let issuerURL = Self.unverifiedIssuer(of: token) else { throw ServiceAccountTokenError("the token has no issuer") }
        guard let keySet = issuers[issuerURL] else { throw ServiceAccountTokenError("issuer \(issuerURL) is not trusted") }
        let key = try await keySet.key(kid, now: now)
        guard key.algorithm == alg else {
            throw ServiceAccountTokenError("the token's algorithm \(alg) does not match its key's \(key.algorithm)")
        }
        let claims: ServiceAccountTokenClaims
        do {
            claims = try await key.collection.verify(token, as: ServiceAccountTokenClaims.self)
        } catch {
            throw ServiceAccountTokenError("the token's signature or claims do not verify")
        }
        return try identity(claims, now: now)
    }

    /// Checks the verified claims' issuer, audience, times and Kubernetes identity.
    private func identity(_ claims: ServiceAccountTokenClaims, now: Date) throws(ServiceAccountTokenError)
        -> ServiceAccountIdentity
    {
        guard issuers[claims.iss] != nil else { throw ServiceAccountTokenError("issuer \(claims.iss) is not trusted") }
        guard claims.aud.value.contains(configuration.audience) else {
            throw ServiceAccountTokenError("the token is not for audience \(configuration.audience)")
        }
        let seconds = now.timeIntervalSince1970
        guard let exp = claims.exp else { throw ServiceAccountTokenError("the token has no expiry (exp)") }
        guard seconds < Double(exp) + configuration.leeway else { throw ServiceAccountTokenError("the token has expired") }
        let notBefore = claims.nbf ?? claims.iat ?? 0
        guard seconds + configuration.leeway >= Double(notBefore) else {
            throw ServiceAccountTokenError("the token is not valid yet")
        }
        if let iat = claims.iat, Double(iat) > seconds + configuration.leeway {
            throw ServiceAccountTokenError("the token was issued in the future")
        }
        guard let kubernetes = claims.kubernetes, !kubernetes.namespace.isEmpty, !kubernetes.serviceaccount.name.isEmpty else {
            throw ServiceAccountTokenError("the token names no service account (kubernetes.io)")
        }
        let identity = ServiceAccountIdentity(
            issuer: claims.iss, namespace: kubernetes.namespace, name: kubernetes.serviceaccount.name,
            podName: kubernetes.pod?.name, podUID: kubernetes.pod?.uid,
            notBefore: Date(timeIntervalSince1970: Double(notBefore) - configuration.leeway),
            expiresAt: Date(timeIntervalSince1970: Double(exp) + configuration.leeway))
        guard claims.sub == nil || claims.sub == identity.username else {
            throw ServiceAccountTokenError("the token's subject does not match its service account")
        }
        return identity
    }

    private static func header(of token: String) throws(ServiceAccountTokenError) -> TokenHeader {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let data = base64URLDecode(parts[0]),
            let header = try? JSONDecoder().decode(TokenHeader.self, from: data)
        else {
            throw ServiceAccountTokenError("the token is not a JWT")
        }
        return header
    }

    private static func unverifiedIssuer(of token: String) -> String? {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let data = base64URLDecode(parts[1]) else { return nil }
        return (try? JSONDecoder().decode(UnverifiedIssuer.self, from: data))?.iss
    }

    private static func base64URLDecode(_ text: Substring) -> Data? {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        return Data(base64Encoded: base64)
    }
}
