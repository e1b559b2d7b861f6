import Foundation

/// A bearer token from a registry's token server, with its lifetime.
///
/// `description` is redacted; the token value is only ever put in an `Authorization` header.
public struct RegistryToken: Sendable, CustomStringConvertible {
    /// The token itself.
    public let value: String
    /// How long the server said the token lives (`expires_in`, 60 seconds when absent).
    public let lifetime: Duration
    /// When the token was received, on the monotonic clock. Lifetimes count from here rather than
    /// from `issued_at`, so clock skew between the machines cannot make a token look expired.
    public let receivedAt: ContinuousClock.Instant
    /// An OAuth2 refresh token, when the server gave one.
    public let refreshToken: String?

    /// Creates a token.
    public init(value: String, lifetime: Duration, receivedAt: ContinuousClock.Instant = .now, refreshToken: String? = nil) {
        self.value = value
        self.lifetime = lifetime
        self.receivedAt = receivedAt
        self.refreshToken = refreshToken
    }

    /// The `Authorization` header value.
    public var authorization: String { "Bearer \(value)" }

    public var description: String { "RegistryToken(<redacted>, lifetime: \(lifetime))" }

    /// The largest token response accepted: a token server is untrusted input.
    static let maximumResponseSize = 1 << 20

    /// Decodes a token response per the distribution token spec and OAuth2.
    static func decode(_ body: Data, receivedAt: ContinuousClock.Instant) throws(AuthError) -> RegistryToken {
        struct Response: Decodable {
            var token: String?
            var access_token: String?
            var expires_in: Double?
            var issued_at: String?
            var refresh_token: String?
        }
        let response: Response
        do {
            response = try JSONDecoder().decode(Response.self, from: body)
        } catch {
            throw AuthError(.invalidTokenResponse, "the token server's answer is not a JSON token response")
        }
        // `token` is the distribution field; `access_token` the OAuth2 one. Either will do.
        guard let value = [response.token, response.access_token].compactMap({ $0 }).first(where: { !$0.isEmpty }) else {
            throw AuthError(.invalidTokenResponse, "the token server's answer holds no token")
        }
        // It goes into an `Authorization` header as it is: a token server must not be able to
        // add headers, or split the request, with a line break in it.
        guard value.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) else {
            throw AuthError(.invalidTokenResponse, "the token server's token holds characters a header cannot carry")
        }
        let seconds = response.expires_in.flatMap { $0 > 0 ? $0 : nil } ?? 60
        return RegistryToken(
            value: value, lifetime: .milliseconds(Int64(seconds * 1000)), receivedAt: receivedAt,
            refreshToken: response.refresh_token.flatMap { $0.isEmpty ? nil : $0 })
    }

    /// The actions granted per resource, read from the token's JWT `access` claim without
    /// verifying it (for diagnostics only; the registry does the verifying).
    public var grantedAccess: [String: [String]]? {
        let parts = value.split(separator: ".")
        guard parts.count == 3 else { return nil }
        var payload = String(parts[1]).replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while payload.count % 4 != 0 { payload += "=" }
        guard let data = Data(base64Encoded: payload),
            let claims = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
            let access = claims["access"] as? [[String: Any]]
        else { return nil }
        var granted: [String: [String]] = [:]
        for entry in access {
            guard let type = entry["type"] as? String, let name = entry["name"] as? String else { continue }
            granted["\(type):\(name)", default: []] += (entry["actions"] as? [String]) ?? []
        }
        return granted
    }
}
