import Foundation
import OCIProxyToken
import OCIReference
import Testing

@testable import OCIConnectorProxy

extension ClientAuthenticator {
    /// What a proxy token grants, for these tests: they give no service account tokens.
    func claims(authorization header: String?, now: Date = Date()) throws(RegistryErrorResponse) -> ClientGrant {
        var last: LastVerified?
        return try claims(authorization: header, last: &last, now: now)
    }

    func claims(authorization header: String?, last: inout LastVerified?, now: Date = Date()) throws(RegistryErrorResponse)
        -> ClientGrant
    {
        guard case .granted(let grant) = try authenticate(authorization: header, last: &last, now: now) else {
            throw RegistryErrorResponse(.internalServerError, "UNEXPECTED", "a proxy token was taken for a service account token")
        }
        return grant
    }
}

/// Remembering verified tokens must not stretch what a token allows.
@Suite("Client authentication")
struct ClientAuthenticatorTests {
    let signer = ProxyTokenSigner()

    func basic(_ token: String) -> String {
        "Basic " + Data("ci:\(token)".utf8).base64EncodedString()
    }

    func expectRefusal(_ reason: String, _ body: () throws(RegistryErrorResponse) -> ClientGrant) {
        do {
            _ = try body()
            Issue.record("accepted, expected: \(reason)")
        } catch {
            #expect(error.status == .unauthorized)
            #expect(error.message.contains(reason), "\(error.message)")
        }
    }

    @Test(arguments: ["basic", "bearer"])
    func aRememberedTokenStillExpires(_ scheme: String) throws {
        let authenticator = ClientAuthenticator(verifier: ProxyTokenVerifier(keys: [signer.verificationKey]))
        let token = signer.sign(ProxyTokenClaims(subject: "ci", connectors: ["a/b"], actions: ["pull"], lifetime: 60))
        let header = scheme == "basic" ? basic(token) : "Bearer \(token)"
        let first = try authenticator.claims(authorization: header)
        #expect(try authenticator.claims(authorization: header) == first)
        expectRefusal("expired") { () throws(RegistryErrorResponse) in
            try authenticator.claims(authorization: header, now: Date(timeIntervalSinceNow: 120))
        }
        expectRefusal("not valid yet") { () throws(RegistryErrorResponse) in
            try authenticator.claims(authorization: header, now: Date(timeIntervalSinceNow: -3600))
        }
    }

    @Test func anExpiredTokenIsNeverRemembered() throws {
        let authenticator = ClientAuthenticator(verifier: ProxyTokenVerifier(keys: [signer.verificationKey]))
        let token = signer.sign(ProxyTokenClaims(subject: "ci", connectors: ["a/b"], actions: ["pull"], lifetime: 60))
        // Refused once as expired, it must not pass afterwards at a time when it would be valid
        // only because a refusal was remembered as something else.
        expectRefusal("expired") { () throws(RegistryErrorResponse) in
            try authenticator.claims(authorization: basic(token), now: Date(timeIntervalSinceNow: 120))
        }
        expectRefusal("expired") { () throws(RegistryErrorResponse) in
            try authenticator.claims(authorization: basic(token), now: Date(timeIntervalSinceNow: 120))
        }
        _ = try authenticator.claims(authorization: basic(token))
    }

    @Test func aTamperedTokenIsCheckedAfresh() throws {
        let authenticator = ClientAuthenticator(verifier: ProxyTokenVerifier(keys: [signer.verificationKey]))
        let token = signer.sign(ProxyTokenClaims(subject: "ci", connectors: ["a/b"], actions: ["pull"], lifetime: 60))
        _ = try authenticator.claims(authorization: "Bearer \(token)")
        var parts = token.split(separator: ".").map(String.init)
        parts[1] = parts[1].replacingOccurrences(of: "a", with: "b")
        expectRefusal("signature") { () throws(RegistryErrorResponse) in
            try authenticator.claims(authorization: "Bearer " + parts.joined(separator: "."))
        }
        let foreign = ProxyTokenSigner().sign(
            ProxyTokenClaims(subject: "ci", connectors: ["a/b"], actions: ["pull"], lifetime: 60))
        expectRefusal("signature") { () throws(RegistryErrorResponse) in try authenticator.claims(authorization: basic(foreign)) }
    }

    @Test func aConnectionsLastTokenStillExpiresAndAnotherIsVerified() throws {
        let authenticator = ClientAuthenticator(verifier: ProxyTokenVerifier(keys: [signer.verificationKey]))
        let token = signer.sign(ProxyTokenClaims(subject: "ci", connectors: ["a/b"], actions: ["pull"], lifetime: 60))
        var last: ClientAuthenticator.LastVerified?
        let first = try authenticator.claims(authorization: basic(token), last: &last)
        #expect(last?.grant == first)
        #expect(try authenticator.claims(authorization: basic(token), last: &last) == first)
        expectRefusal("expired") { () throws(RegistryErrorResponse) in
            try authenticator.claims(authorization: basic(token), last: &last, now: Date(timeIntervalSinceNow: 120))
        }
        // A different header on the same connection is verified on its own, and a refused one
        // leaves the last good one in place.
        let foreign = ProxyTokenSigner().sign(
            ProxyTokenClaims(subject: "ci", connectors: ["a/b"], actions: ["pull"], lifetime: 60))
        expectRefusal("signature") { () throws(RegistryErrorResponse) in
            try authenticator.claims(authorization: basic(foreign), last: &last)
        }
        expectRefusal("authentication required") { () throws(RegistryErrorResponse) in
            try authenticator.claims(authorization: nil, last: &last)
        }
        #expect(last?.header == basic(token))
        let other = signer.sign(ProxyTokenClaims(subject: "ci", connectors: ["c/d"], actions: ["push"], lifetime: 60))
        let grant = try authenticator.claims(authorization: "Bearer \(other)", last: &last)
        #expect(grant.allows(connector: try ConnectorID(parsing: "c/d"), action: "push", repository: nil))
        #expect(!grant.allows(connector: try ConnectorID(parsing: "a/b"), action: "pull", repository: nil))
        #expect(last?.header == "Bearer \(other)")
    }
}

/// Remembered credentials compare every byte, whatever the outcome.
@Suite("Constant-time credential comparison")
struct CredentialKeyTests {
    static let token = "Bearer eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ3b3JrbG9hZCJ9.c2lnbmF0dXJl"

    @Test(arguments: [
        (token, token, true),
        (token, String(token.dropLast()) + "M", false),  // The last byte differs.
        (token, "X" + token.dropFirst(), false),  // The first byte differs.
        (token, token + "=", false),  // A prefix.
        (token, String(token.dropLast()), false),
        ("", "", true),
        ("", "Basic Og==", false),
        ("Basic d29ya2xvYWQ6w6k=", "Basic d29ya2xvYWQ6w6k=", true),
        ("é", "e\u{301}", false),  // Canonically equivalent, but other bytes: not the same credential.
    ])
    func equalityIsByteForByte(lhs: String, rhs: String, equal: Bool) {
        #expect(constantTimeEquals(lhs, rhs) == equal)
        #expect((CredentialKey(lhs) == CredentialKey(rhs)) == equal)
        if equal { #expect(CredentialKey(lhs).hashValue == CredentialKey(rhs).hashValue) }
    }

    /// A remembered header is found by an equal one, and only by it.
    @Test func theCacheFindsOnlyTheSameHeader() {
        var remembered: [CredentialKey: Int] = [:]
        remembered[CredentialKey(Self.token)] = 1
        #expect(remembered[CredentialKey(String(Self.token.utf8.map { Character(UnicodeScalar($0)) }))] == 1)
        #expect(remembered[CredentialKey(Self.token.lowercased())] == nil)
    }
}
