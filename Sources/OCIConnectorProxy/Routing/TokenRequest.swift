import Foundation
import OCIProxyToken
import OCIReference

/// A request to the proxy's token endpoint, as the distribution token flow sends it:
/// `GET /token?service=…&scope=repository:NAME:pull,push` with Basic credentials, or the OAuth2
/// form `POST /token` (`grant_type=password&username=…&password=…&scope=…`).
///
/// Scopes name repositories as the client sees them: `namespaces/NS/connectors/NAME/REPOSITORY`
/// in the path form, `REPOSITORY` in the host form (the connector is the `Host`'s).
struct TokenRequest: Equatable {
    /// One `repository:NAME:ACTIONS` scope.
    struct Scope: Equatable {
        let name: String
        let actions: [String]
    }

    var scopes: [Scope] = []
    /// The form's `grant_type` (`nil` for a `GET`).
    var grantType: String?
    /// Credentials from the form (`grant_type=password`).
    var username: String?
    var password: String?

    /// The path the endpoint is served at.
    static let path = "/token"

    /// Reads the query and, for a `POST`, the form body. Scopes of other types
    /// (`registry:catalog:*`) and malformed ones are left out, as token servers do.
    init(query: Substring?, form: String?) throws(RegistryErrorResponse) {
        var fields = Self.fields(query.map(String.init) ?? "")
        if let form {
            fields += Self.fields(form)
            grantType = fields.last { $0.0 == "grant_type" }?.1
            guard let grantType, grantType == "password" else {
                throw RegistryErrorResponse(
                    .badRequest, "UNSUPPORTED",
                    "grant_type \(grantType ?? "(none)") is not supported; use password, or GET with Basic credentials")
            }
            username = fields.last { $0.0 == "username" }?.1
            password = fields.last { $0.0 == "password" }?.1
        }
        for (name, value) in fields where name == "scope" {
            for text in value.split(separator: " ") {
                if let scope = Self.scope(text) { scopes.append(scope) }
            }
        }
    }

    /// `repository:NAME:ACTIONS`; `*` stands for every action.
    static func scope(_ text: Substring) -> Scope? {
        guard let first = text.firstIndex(of: ":"), let last = text.lastIndex(of: ":"), first < last,
            text[..<first] == "repository"
        else { return nil }
        let name = String(text[text.index(after: first)..<last])
        let actions = text[text.index(after: last)...].split(separator: ",").flatMap { action -> [String] in
            action == "*" ? ["pull", "push", "delete"] : [String(action)]
        }
        guard !name.isEmpty, !actions.isEmpty else { return nil }
        return Scope(name: name, actions: actions)
    }

    /// `application/x-www-form-urlencoded` pairs, in order.
    static func fields(_ text: String) -> [(String, String)] {
        text.split(separator: "&").compactMap { pair in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = decode(parts[0]) else { return nil }
            return (name, parts.count > 1 ? decode(parts[1]) ?? "" : "")
        }
    }

    private static func decode(_ text: Substring) -> String? {
        text.replacingOccurrences(of: "+", with: " ").removingPercentEncoding
    }

    /// The `Authorization` header the credentials amount to: the form's, or the request's own.
    func authorization(header: String?) -> String? {
        guard let password else { return header }
        return "Basic " + Data("\(username ?? "token"):\(password)".utf8).base64EncodedString()
    }

    /// What `grant` allows of the scopes: each repository with the requested actions it may
    /// perform, named as upstream repositories of their connectors. `connector(forName:)` maps a
    /// scope's name to its connector and upstream repository, `nil` for names that lead nowhere.
    func access(granted grant: ClientGrant, connector: (String) -> (ConnectorID, String)?) -> [ProxyTokenClaims.Access] {
        var entries: [ProxyTokenClaims.Access] = []
        for scope in scopes {
            guard let (id, repository) = connector(scope.name) else { continue }
            var actions: [String] = []
            for action in scope.actions where !actions.contains(action) {
                if grant.allows(connector: id, action: action, repository: repository) { actions.append(action) }
            }
            guard !actions.isEmpty else { continue }
            if let index = entries.firstIndex(where: { $0.connector == id.description && $0.repository == repository }) {
                entries[index].actions = Array(Set(entries[index].actions + actions)).sorted()
            } else {
                entries.append(.init(connector: id.description, repository: repository, actions: actions.sorted()))
            }
        }
        return entries
    }

    /// The scope a request for `action` on `name` (as the client names it) needs, for challenges.
    static func challengeScope(name: String, action: String) -> String {
        "repository:\(name):" + (action == "push" ? "pull,push" : action)
    }
}
