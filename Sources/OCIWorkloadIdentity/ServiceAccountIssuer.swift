import Foundation

/// A cluster whose service account tokens the proxy accepts: its issuer URL (the tokens' `iss`)
/// and where its public keys are found.
public struct ServiceAccountIssuer: Hashable, Sendable {
    /// Where an issuer's JSON Web Key Set is read.
    public enum KeySource: Hashable, Sendable {
        /// OIDC discovery: `ISSUER/.well-known/openid-configuration` names the `jwks_uri`.
        case discovery
        /// A JWKS file (as `kubectl get --raw /openid/v1/jwks` prints it).
        case file(String)
        /// A JWKS served at an `http(s)` URL.
        case url(String)
    }

    /// The issuer URL, exactly as tokens carry it in `iss`.
    public let url: String
    /// Where its keys are read.
    public let keys: KeySource

    /// Creates an issuer.
    public init(url: String, keys: KeySource = .discovery) {
        self.url = url
        self.keys = keys
    }

    /// Reads `ISSUER=FILE|URL`, the form of `--service-account-jwks`: a value starting with
    /// `http://` or `https://` is a URL, anything else a file.
    public init(jwksArgument argument: String) throws(ServiceAccountTokenError) {
        guard let equals = argument.lastIndex(of: "="), equals != argument.startIndex,
            argument.index(after: equals) != argument.endIndex
        else {
            throw ServiceAccountTokenError("\(argument) is not ISSUER=FILE or ISSUER=URL")
        }
        let location = String(argument[argument.index(after: equals)...])
        url = String(argument[..<equals])
        keys = location.hasPrefix("http://") || location.hasPrefix("https://") ? .url(location) : .file(location)
    }

    /// The OIDC discovery document's URL.
    var discoveryURL: String {
        (url.hasSuffix("/") ? String(url.dropLast()) : url) + "/.well-known/openid-configuration"
    }
}
