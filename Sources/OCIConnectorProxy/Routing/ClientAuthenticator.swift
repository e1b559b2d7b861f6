import CoreMetrics
import Foundation
import OCIConnectors
import OCIProxyToken
import OCIWorkloadIdentity
import Synchronization

/// Reads and checks who the workload is, before anything is sent upstream: a proxy token, or a
/// Kubernetes service account token whose `ConnectorBinding`s say what it may do.
///
/// The token arrives as the password of Basic credentials (any username) or as a Bearer token.
/// A workload sends the same header on every request of a pull, so the grants of headers that
/// verified are remembered: checking an Ed25519 signature and decoding the JWT was a third of
/// the proxy's CPU per manifest request, and a service account token's keys may have to be
/// fetched. A remembered grant's validity period is still checked on every request; headers
/// that failed are not remembered.
///
/// Proxy tokens verify at once. A service account token not seen before is verified
/// asynchronously (``Outcome/verifyFirst(_:)``): the request waits for it, then is decided again.
///
/// Each check is counted: `oci_connector_client_tokens_total{result, reason}`, `result` being
/// `accepted` or `refused` and `reason` a ``Refusal``.
final class ClientAuthenticator: Sendable {
    let verifier: ProxyTokenVerifier
    /// Service account tokens, when the proxy trusts a cluster's issuer.
    let serviceAccounts: ServiceAccountTokenVerifier?
    /// Whether `serviceAccounts` trusts any issuer: worked out once, not for every new header.
    private let acceptsServiceAccounts: Bool
    /// Where the bindings of service accounts are read.
    let catalog: ConnectorCatalog

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

    /// What checking a request's credentials came to.
    enum Outcome {
        /// Verified: what the client may do.
        case granted(ClientGrant)
        /// A service account token to verify first (keys may have to be fetched).
        case verifyFirst(PendingVerification)
    }

    /// A service account token whose verification the request waits for.
    struct PendingVerification: Sendable {
        let authenticator: ClientAuthenticator
        let header: String
        let token: String

        /// Verifies the token and remembers its grant, or answers the refusal.
        func run() async -> Result<ClientGrant, RegistryErrorResponse> {
            await authenticator.verifyServiceAccount(token, header: header)
        }
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
    private let verified = Mutex<[CredentialKey: ClientGrant]>([:])

    init(verifier: ProxyTokenVerifier, serviceAccounts: ServiceAccountTokenVerifier? = nil, catalog: ConnectorCatalog = .init([]))
    {
        self.verifier = verifier
        self.serviceAccounts = serviceAccounts
        self.acceptsServiceAccounts = !(serviceAccounts?.issuerURLs.isEmpty ?? true)
        self.catalog = catalog
    }

    /// The header a connection's last request verified with, and its grant.
    struct LastVerified {
        let header: String
        let grant: ClientGrant
        /// The authenticator that verified it: after a reload with other keys, it is verified again.
        let verifier: ObjectIdentifier
    }

    /// ``authenticate(authorization:now:)`` for a connection whose requests repeat one header:
    /// one that equals `last`'s (compared in constant time, ``CredentialKey``) is not looked up
    /// again (hashing a JWT of several hundred bytes and taking the lock cost more than comparing
    /// it), but its validity period is still checked.
    func authenticate(authorization header: String?, last: inout LastVerified?, now: Date = Date()) throws(RegistryErrorResponse)
        -> Outcome
    {
        if let last, let header, constantTimeEquals(header, last.header), last.verifier == ObjectIdentifier(self) {
            try valid(last.grant, at: now)
            accepted.increment()
            return .granted(last.grant)
        }
        let outcome = try authenticate(authorization: header, now: now)
        if case .granted(let grant) = outcome, let header {
            last = LastVerified(header: header, grant: grant, verifier: ObjectIdentifier(self))
        }
        return outcome
    }

    /// What the credentials in an `Authorization` header value allow, or a 401.
    func authenticate(authorization header: String?, now: Date = Date()) throws(RegistryErrorResponse) -> Outcome {
        guard let header, !header.isEmpty else {
            throw refuse(.missing, "authentication required: use the proxy token as the password, or as a Bearer token")
        }
        if let grant = verified.withLock({ $0[CredentialKey(header)] }) {
            try valid(grant, at: now)
            accepted.increment()
            return .granted(grant)
        }
        let token = try token(in: header)
        if let serviceAccounts, !serviceAccounts.issuerURLs.isEmpty,
            ServiceAccountTokenVerifier.looksLikeServiceAccountToken(token)
        {
            return .verifyFirst(PendingVerification(authenticator: self, header: header, token: token))
        }
        let grant: ClientGrant
        do {
            grant = ClientGrant(claims: try verifier.verify(token, now: now))
        } catch {
            throw refuse(.invalid, "invalid proxy token: \(error.reason)")
        }
        remember(grant, for: header)
        accepted.increment()
        return .granted(grant)
    }

    /// Verifies a service account token and remembers what its bindings grant.
    func verifyServiceAccount(_ token: String, header: String, now: Date = Date()) async -> Result<
        ClientGrant, RegistryErrorResponse
    > {
        guard let serviceAccounts else { return .failure(refuse(.invalid, "service account tokens are not accepted")) }
        do {
            let identity = try await serviceAccounts.verify(token, now: now)
            let grant = ClientGrant(serviceAccount: identity, catalog: catalog)
            remember(grant, for: header)
            return .success(grant)
        } catch {
            return .failure(refuse(.invalid, "invalid service account token: \(error.reason)"))
        }
    }

    private func remember(_ grant: ClientGrant, for header: String) {
        verified.withLock { verified in
            if verified.count >= Self.rememberedHeaders { verified.removeAll(keepingCapacity: true) }
            verified[CredentialKey(header)] = grant
        }
    }

    private func valid(_ grant: ClientGrant, at now: Date) throws(RegistryErrorResponse) {
        do {
            try grant.checkValidity(at: now)
        } catch {
            throw refuse(.invalid, "invalid token: \(error.reason)")
        }
    }

    /// The token in a Basic password or after Bearer.
    private func token(in header: String) throws(RegistryErrorResponse) -> String {
        let lowercased = header.prefix(7).lowercased()
        if lowercased.hasPrefix("bearer ") {
            return String(header.dropFirst(7)).trimmingCharacters(in: .whitespaces)
        }
        guard lowercased.hasPrefix("basic ") else {
            throw refuse(.scheme, "unsupported authorization scheme; use Basic or Bearer")
        }
        guard let data = Data(base64Encoded: String(header.dropFirst(6)).trimmingCharacters(in: .whitespaces)),
            let pair = String(data: data, encoding: .utf8), let colon = pair.firstIndex(of: ":")
        else { throw refuse(.malformed, "malformed Basic credentials") }
        return String(pair[pair.index(after: colon)...])
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
