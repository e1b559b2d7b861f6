import Foundation
import OCIConnectors
import OCIProxyToken
import OCIReference
import OCIWorkloadIdentity

/// What a verified client may do, whichever way it proved who it is: the claims of a proxy
/// token, or the `ConnectorBinding`s that name its Kubernetes service account.
struct ClientGrant: Hashable, Sendable {
    /// Who it is, for the log: a proxy token's subject, or `system:serviceaccount:NS:NAME`.
    let identity: String
    /// The pod a service account token is bound to, for the log.
    let pod: String?
    /// The validity period, in seconds since 1970.
    let notBefore: Int
    let expiresAt: Int
    let rules: Rules

    enum Rules: Hashable, Sendable {
        case token(ProxyTokenClaims)
        case bindings([ConnectorBinding])
    }

    init(claims: ProxyTokenClaims) {
        identity = claims.subject
        pod = nil
        notBefore = claims.notBefore
        expiresAt = claims.expiresAt
        rules = .token(claims)
    }

    /// A service account and the bindings of `catalog` that name it.
    init(serviceAccount: ServiceAccountIdentity, catalog: ConnectorCatalog) {
        identity = serviceAccount.username
        pod = serviceAccount.podName
        notBefore = Int(serviceAccount.notBefore.timeIntervalSince1970)
        expiresAt = Int(serviceAccount.expiresAt.timeIntervalSince1970)
        rules = .bindings(catalog.bindings(forUser: serviceAccount.username, groups: serviceAccount.groups))
    }

    /// Whether it is a token of the proxy's token endpoint, limited to the scopes it was asked for.
    var isScoped: Bool {
        if case .token(let claims) = rules { return claims.access != nil }
        return false
    }

    /// Throws unless `now` lies in the validity period.
    func checkValidity(at now: Date) throws(ProxyTokenError) {
        let seconds = Int(now.timeIntervalSince1970)
        guard seconds < expiresAt else { throw ProxyTokenError("the token has expired") }
        guard seconds >= notBefore else { throw ProxyTokenError("the token is not valid yet") }
    }

    /// Whether it allows `action` on `repository` (`nil`: the connector itself) through `connector`.
    func allows(connector: ConnectorID, action: String, repository: String?) -> Bool {
        switch rules {
        case .token(let claims): claims.allows(connector: connector.description, action: action, repository: repository)
        case .bindings(let bindings):
            bindings.contains { $0.allows(connector: connector, action: action, repository: repository) }
        }
    }

    /// Whether it may pull only some repositories of `connector`: its catalog is filtered then.
    func limitsRepositories(of connector: ConnectorID) -> Bool {
        switch rules {
        case .token(let claims): claims.repositories != nil
        case .bindings(let bindings):
            !bindings.contains { $0.repositories == nil && $0.allows(connector: connector, action: "pull", repository: nil) }
        }
    }

    /// The 403's message when it does not allow `action` on `repository` through `connector`.
    func denial(connector: ConnectorID, action: String, repository: String?) -> String {
        let what = "\(action) on \(repository ?? "this connector") through \(connector)"
        switch rules {
        case .token: return "the token does not allow \(what)"
        case .bindings:
            return
                "no ConnectorBinding in namespace \(connector.namespace) grants \(identity) \(what): access through a connector is granted only by a binding that names the service account"
        }
    }
}
