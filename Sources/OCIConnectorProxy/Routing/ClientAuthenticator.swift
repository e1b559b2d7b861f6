import CoreMetrics
import Foundation
import OCIProxyToken
import Synchronization

/// Reads and checks the workload's proxy token, before anything is sent upstream.
///
/// The token arrives as the password of Basic credentials (any username) or as a Bearer token.
/// A workload sends the same header on every request of a pull, so the claims of headers that
/// verified are remembered: checking an Ed25519 signature and decoding the JWT was a third of
/// the proxy's CPU per manifest request. A remembered token's validity period is still checked
/// on every request; headers that failed are not remembered.
///
/// Each check is counted: `oci_connector_client_tokens_total{result, reason}`, `result` being
/// `accepted` or `refused` and `reason` a ``Refusal``.
final class ClientAuthenticator: Sendable {
    let verifier: ProxyTokenVerifier

    /// Why a client's request was refused before anything went upstream.
    enum Refusal: String, CaseIterable, Sendable {
        /// No `Authorization`.
        case missing
        /// Basic credentials that do not decode.
        case malformed
        /// A scheme other than Basic or Bearer.
        case scheme
        /// A token that does not verify: bad signature, unknown key, expired, not yet valid.
        case invalid
        /// A valid token that does not allow what the request asks.
        case denied
    }

    private let accepted = Counter(
        label: "oci_connector_client_tokens_total", dimensions: [("result", "accepted"), ("reason", "-")])
    private let refused: [Refusal: Counter] = Dictionary(
        uniqueKeysWithValues: Refusal.allCases.map { refusal in
            (
                refusal,
                Counter(
                    label: "oci_connector_client_tokens_total", dimensions: [("result", "refused"), ("reason", refusal.rawValue)])
            )
        })

    /// Counts a refusal.
    func count(_ refusal: Refusal) {
        refused[refusal]?.increment()
    }

    static let realm = "oci-connector-proxy"
    /// How many verified headers are remembered; all are forgotten when it is reached.
    static let rememberedHeaders = 1024
    private let verified = Mutex<[String: ProxyTokenClaims]>([:])

    init(verifier: ProxyTokenVerifier) {
        self.verifier = verifier
    }

    /// The header a connection's last request verified with, and its claims.
    struct LastVerified {
        let header: String
        let claims: ProxyTokenClaims
        /// The authenticator that verified it: after a reload with other keys, it is verified again.
        let verifier: ObjectIdentifier
    }

    /// ``claims(authorization:now:)`` for a connection whose requests repeat one header: one
    /// that equals `last`'s is not looked up again (hashing a JWT of several hundred bytes and
    /// taking the lock cost more than comparing it), but its validity period is still checked.
    func claims(authorization header: String?, last: inout LastVerified?, now: Date = Date()) throws(RegistryErrorResponse)
        -> ProxyTokenClaims
    {
        if let last, let header, header == last.header, last.verifier == ObjectIdentifier(self) {
            do {
                try last.claims.checkValidity(at: now)
            } catch {
                throw refuse(.invalid, "invalid proxy token: \(error.reason)")
            }
            accepted.increment()
            return last.claims
        }
        let claims = try uncountedClaims(authorization: header, now: now)
        if let header { last = LastVerified(header: header, claims: claims, verifier: ObjectIdentifier(self)) }
        accepted.increment()
        return claims
    }

    /// The claims of the token in an `Authorization` header value, or a 401.
    func claims(authorization header: String?, now: Date = Date()) throws(RegistryErrorResponse) -> ProxyTokenClaims {
        let claims = try uncountedClaims(authorization: header, now: now)
        accepted.increment()
        return claims
    }

    private func uncountedClaims(authorization header: String?, now: Date) throws(RegistryErrorResponse) -> ProxyTokenClaims {
        guard let header, !header.isEmpty else {
            throw refuse(.missing, "authentication required: use the proxy token as the password, or as a Bearer token")
        }
        if let claims = verified.withLock({ $0[header] }) {
            do {
                try claims.checkValidity(at: now)
            } catch {
                throw refuse(.invalid, "invalid proxy token: \(error.reason)")
            }
            return claims
        }
        let claims = try verify(header, now: now)
        verified.withLock { verified in
            if verified.count >= Self.rememberedHeaders { verified.removeAll(keepingCapacity: true) }
            verified[header] = claims
        }
        return claims
    }

    private func verify(_ header: String, now: Date) throws(RegistryErrorResponse) -> ProxyTokenClaims {
        let token: String
        let lowercased = header.lowercased()
        if lowercased.hasPrefix("bearer ") {
            token = String(header.dropFirst(7)).trimmingCharacters(in: .whitespaces)
        } else if lowercased.hasPrefix("basic ") {
            guard let data = Data(base64Encoded: String(header.dropFirst(6)).trimmingCharacters(in: .whitespaces)),
                let pair = String(data: data, encoding: .utf8), let colon = pair.firstIndex(of: ":")
            else { throw refuse(.malformed, "malformed Basic credentials") }
            token = String(pair[pair.index(after: colon)...])
        } else {
            throw refuse(.scheme, "unsupported authorization scheme; use Basic or Bearer")
        }
        do {
            return try verifier.verify(token, now: now)
        } catch {
            throw refuse(.invalid, "invalid proxy token: \(error.reason)")
        }
    }

    /// Counts a refusal and makes its 401.
    private func refuse(_ refusal: Refusal, _ message: String) -> RegistryErrorResponse {
        count(refusal)
        return Self.unauthorized(message)
    }

    static func unauthorized(_ message: String) -> RegistryErrorResponse {
        var error = RegistryErrorResponse(.unauthorized, "UNAUTHORIZED", message)
        error.headers.add(name: "WWW-Authenticate", value: #"Basic realm="\#(realm)""#)
        return error
    }
}
