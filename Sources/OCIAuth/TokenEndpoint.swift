import AsyncHTTPClient
import Foundation
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import OCIConnectors
public import OCIReference

/// A registry's token server, from a `Bearer` challenge: the realm URL and the service name.
public struct TokenEndpoint: Hashable, Sendable, CustomStringConvertible {
    /// The realm URL, already checked.
    public let realm: String
    /// The `service` parameter, when the challenge had one.
    public let service: String?

    /// Reads the realm and service of a `Bearer` challenge.
    ///
    /// The realm is untrusted input: it must be an absolute http(s) URL, and it may not
    /// downgrade an https registry to an http token server (credentials would cross in clear).
    public init(challenge: AuthChallenge, registry: RegistryAddress) throws(AuthError) {
        guard let realm = challenge[parameter: "realm"], !realm.isEmpty else {
            throw AuthError(.malformedChallenge, "the registry's Bearer challenge has no realm")
        }
        guard let url = URL(string: realm), let scheme = url.scheme?.lowercased(), url.host != nil,
            scheme == "https" || scheme == "http"
        else {
            throw AuthError(.untrustedRealm, "the token realm \(realm) is not an absolute http(s) URL")
        }
        if registry.scheme == .https, scheme == "http" {
            throw AuthError(
                .untrustedRealm,
                "the token realm \(realm) would downgrade \(registry.baseURL) from https to http; refusing to send credentials there"
            )
        }
        guard url.user == nil, url.password == nil, url.fragment == nil else {
            throw AuthError(.untrustedRealm, "the token realm may not hold user information or a fragment")
        }
        self.realm = realm
        self.service = challenge[parameter: "service"]
    }

    public var description: String { realm }

    /// Asks the token server for a token covering `scopes`.
    ///
    /// With credentials and `preferOAuth2`, it first tries the OAuth2 `POST` (`grant_type=password`,
    /// or `refresh_token` when one is held), falling back to `GET` when the endpoint refuses the
    /// method. The `GET` sends one `scope` parameter per scope and the credentials as Basic.
    func fetchToken(
        scopes: ScopeSet, credentials: RegistryCredentials?, preferOAuth2: Bool, refreshToken: String?,
        client: HTTPClient, timeout: TimeAmount
    ) async throws(AuthError) -> RegistryToken {
        if preferOAuth2, credentials != nil || refreshToken != nil {
            if let token = try await postForToken(
                scopes: scopes, credentials: credentials, refreshToken: refreshToken, client: client, timeout: timeout)
            {
                return token
            }
        }
        return try await getToken(scopes: scopes, credentials: credentials, client: client, timeout: timeout)
    }

    private func getToken(
        scopes: ScopeSet, credentials: RegistryCredentials?, client: HTTPClient, timeout: TimeAmount
    ) async throws(AuthError) -> RegistryToken {
        var query: [(String, String)] = []
        if let service { query.append(("service", service)) }
        for scope in scopes.scopes { query.append(("scope", scope.description)) }
        if let credentials { query.append(("account", credentials.username)) }
        var request = HTTPClientRequest(url: Self.appending(query, to: realm))
        request.method = .GET
        request.headers.add(name: "Accept", value: "application/json")
        if let credentials { request.headers.add(name: "Authorization", value: credentials.basicAuthorization) }
        let (status, body, receivedAt) = try await send(request, client: client, timeout: timeout)
        switch status.code {
        case 200:
            return try RegistryToken.decode(body, receivedAt: receivedAt)
        case 401:
            throw AuthError(
                .badCredentials,
                credentials == nil
                    ? "the token server at \(realm) requires credentials"
                    : "the token server at \(realm) rejected the credentials")
        case 403:
            throw AuthError(.insufficientScope, "the token server at \(realm) refused access to \(scopes)")
        default:
            throw AuthError(.invalidTokenResponse, "the token server at \(realm) answered \(status.code) \(status.reasonPhrase)")
        }
    }

    /// The OAuth2 form; `nil` when the endpoint does not take POST, so GET should be used.
    private func postForToken(
        scopes: ScopeSet, credentials: RegistryCredentials?, refreshToken: String?, client: HTTPClient, timeout: TimeAmount
    ) async throws(AuthError) -> RegistryToken? {
        var form: [(String, String)] = [("client_id", "swift-oci-connector")]
        if let refreshToken {
            form += [("grant_type", "refresh_token"), ("refresh_token", refreshToken)]
        } else if let credentials {
            form += [("grant_type", "password"), ("username", credentials.username), ("password", credentials.password)]
        }
        if let service { form.append(("service", service)) }
        if !scopes.isEmpty { form.append(("scope", scopes.description)) }
        var request = HTTPClientRequest(url: realm)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
        request.headers.add(name: "Accept", value: "application/json")
        request.body = .bytes(ByteBuffer(string: Self.formEncode(form)))
        let (status, body, receivedAt) = try await send(request, client: client, timeout: timeout)
        switch status.code {
        case 200:
            return try RegistryToken.decode(body, receivedAt: receivedAt)
        case 404, 405, 501:
            return nil  // No OAuth2 here; the GET form is the standard one.
        case 400 where refreshToken != nil, 401 where refreshToken != nil:
            // An expired or revoked refresh token: start again from the credentials.
            return credentials == nil
                ? nil
                : try await postForToken(
                    scopes: scopes, credentials: credentials, refreshToken: nil, client: client, timeout: timeout)
        case 400, 401:
            throw AuthError(.badCredentials, "the token server at \(realm) rejected the credentials")
        case 403:
            throw AuthError(.insufficientScope, "the token server at \(realm) refused access to \(scopes)")
        default:
            throw AuthError(.invalidTokenResponse, "the token server at \(realm) answered \(status.code) \(status.reasonPhrase)")
        }
    }

    private func send(
        _ request: HTTPClientRequest, client: HTTPClient, timeout: TimeAmount
    ) async throws(AuthError) -> (HTTPResponseStatus, Data, ContinuousClock.Instant) {
        do {
            let response = try await client.execute(request, timeout: timeout)
            let receivedAt = ContinuousClock.now
            var body = try await response.body.collect(upTo: RegistryToken.maximumResponseSize)
            return (response.status, body.readData(length: body.readableBytes) ?? Data(), receivedAt)
        } catch is NIOTooManyBytesError {
            throw AuthError(
                .invalidTokenResponse, "the token server at \(realm) sent more than \(RegistryToken.maximumResponseSize) bytes")
        } catch {
            throw UpstreamFailure.classify(error, talkingTo: "the token server at \(realm)")
        }
    }

    static func appending(_ query: [(String, String)], to url: String) -> String {
        guard !query.isEmpty else { return url }
        return url + (url.contains("?") ? "&" : "?") + formEncode(query)
    }

    static func formEncode(_ pairs: [(String, String)]) -> String {
        pairs.map { "\(percentEncode($0.0))=\(percentEncode($0.1))" }.joined(separator: "&")
    }

    /// Percent-encodes everything but RFC 3986's unreserved characters.
    static func percentEncode(_ text: String) -> String {
        var output = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                output.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                output += "%" + String(byte >> 4, radix: 16, uppercase: true) + String(byte & 15, radix: 16, uppercase: true)
            }
        }
        return output
    }
}

/// Turns transport errors into ``AuthError``s that say what failed without leaking anything.
enum UpstreamFailure {
    static func classify(_ error: any Error, talkingTo peer: String) -> AuthError {
        if let error = error as? AuthError { return error }
        if let error = error as? HTTPClientError {
            switch error {
            case .connectTimeout: return AuthError(.timedOut, "\(peer) did not accept a connection in time")
            case .readTimeout, .deadlineExceeded: return AuthError(.timedOut, "\(peer) did not answer in time")
            default: break
            }
        }
        if case ChannelError.connectTimeout? = error as? ChannelError {
            return AuthError(.timedOut, "\(peer) did not accept a connection in time")
        }
        let text = String(describing: error)
        let type = String(reflecting: type(of: error))
        if type.contains("NIOSSL") || text.contains("handshake") || text.contains("certificate") || text.contains("SSL") {
            return AuthError(.tlsFailure, "TLS with \(peer) failed: \(Self.short(text))")
        }
        return AuthError(.unreachable, "\(peer) is unreachable: \(Self.short(text))")
    }

    /// Transport errors describe sockets and handshakes, not requests: safe to show, trimmed.
    private static func short(_ text: String) -> String {
        text.count > 200 ? String(text.prefix(200)) + "…" : text
    }
}
