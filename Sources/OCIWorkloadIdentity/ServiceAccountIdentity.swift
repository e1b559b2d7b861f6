public import Foundation

/// A Kubernetes service account, as a verified service account token names it.
public struct ServiceAccountIdentity: Hashable, Sendable {
    /// The issuer (`iss`): which cluster.
    public let issuer: String
    /// The service account's namespace and name.
    public let namespace: String
    public let name: String
    /// The pod the token is bound to, for tokens kubelet projects into a pod.
    public let podName: String?
    public let podUID: String?
    /// The token's validity period, leeway included.
    public let notBefore: Date
    public let expiresAt: Date

    /// Creates an identity.
    public init(
        issuer: String, namespace: String, name: String, podName: String? = nil, podUID: String? = nil, notBefore: Date,
        expiresAt: Date
    ) {
        self.issuer = issuer
        self.namespace = namespace
        self.name = name
        self.podName = podName
        self.podUID = podUID
        self.notBefore = notBefore
        self.expiresAt = expiresAt
    }

    /// `system:serviceaccount:NAMESPACE:NAME`, the user name Kubernetes gives it.
    public var username: String { "system:serviceaccount:\(namespace):\(name)" }

    /// The groups Kubernetes puts every service account in: all service accounts, those of its
    /// namespace, and all authenticated users.
    public var groups: [String] { ["system:serviceaccounts", "system:serviceaccounts:\(namespace)", "system:authenticated"] }
}

/// Why a service account token was not accepted. Messages never include the token.
public struct ServiceAccountTokenError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The reason, for the client's error body and the log.
    public let reason: String
    /// Creates an error.
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}
