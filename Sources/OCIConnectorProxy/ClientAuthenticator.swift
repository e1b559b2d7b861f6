import Foundation
import Hummingbird
import OCIProxyToken

/// Reads and checks the workload's proxy token, before anything is sent upstream.
///
/// The token arrives as the password of Basic credentials (any username) or as a Bearer token.
struct ClientAuthenticator: Sendable {
    let verifier: ProxyTokenVerifier
    static let realm = "oci-connector-proxy"

    /// The claims of the request's token, or a 401 in the distribution error format.
    func claims(_ request: Request) throws(RegistryErrorResponse) -> ProxyTokenClaims {
        guard let header = request.headers[.authorization], !header.isEmpty else {
            throw Self.unauthorized("authentication required: use the proxy token as the password, or as a Bearer token")
        }
        let token: String
        let lowercased = header.lowercased()
        if lowercased.hasPrefix("bearer ") {
            token = String(header.dropFirst(7)).trimmingCharacters(in: .whitespaces)
        } else if lowercased.hasPrefix("basic ") {
            guard let data = Data(base64Encoded: String(header.dropFirst(6)).trimmingCharacters(in: .whitespaces)),
                  let pair = String(data: data, encoding: .utf8), let colon = pair.firstIndex(of: ":")
            else { throw Self.unauthorized("malformed Basic credentials") }
            token = String(pair[pair.index(after: colon)...])
        } else {
            throw Self.unauthorized("unsupported authorization scheme; use Basic or Bearer")
        }
        do {
            return try verifier.verify(token)
        } catch {
            throw Self.unauthorized("invalid proxy token: \(error.reason)")
        }
    }

    static func unauthorized(_ message: String) -> RegistryErrorResponse {
        var error = RegistryErrorResponse(.unauthorized, "UNAUTHORIZED", message)
        error.headers[.wwwAuthenticate] = #"Basic realm="\#(realm)""#
        return error
    }
}
