public import Foundation
import OCIReference

/// What a proxy token allows: which connectors, which actions, optionally which repositories, and
/// until when.
///
/// Tokens are JWTs signed with Ed25519 (`alg: EdDSA`), so they can be inspected with any JWT tool;
/// the proxy holds only verification keys.
public struct ProxyTokenClaims: Codable, Hashable, Sendable {
    /// Who the token was minted for (`sub`).
    public var subject: String
    /// Connectors it may use, as `namespace/name`.
    public var connectors: [String]
    /// Actions it may perform: `pull`, `push`, `delete`.
    public var actions: [String]
    /// Upstream repository patterns (`*` matches within one path element, `**` across elements);
    /// `nil` allows every repository.
    public var repositories: [String]?
    /// Issued at, not before, expires (seconds since 1970).
    public var issuedAt: Int
    public var notBefore: Int
    public var expiresAt: Int
    /// A unique identifier (`jti`).
    public var id: String
    /// Exactly what the token allows, when the proxy's token endpoint minted it for a client's
    /// scopes: each entry one repository of one connector and its actions. When present it
    /// decides alone; ``connectors``, ``actions`` and ``repositories`` then summarise it.
    public var access: [Access]?

    /// One repository of one connector and the actions allowed on it.
    public struct Access: Codable, Hashable, Sendable {
        /// The connector, as `namespace/name`.
        public var connector: String
        /// The upstream repository.
        public var repository: String
        /// Some of `pull`, `push`, `delete`.
        public var actions: [String]

        /// Creates an entry.
        public init(connector: String, repository: String, actions: [String]) {
            self.connector = connector
            self.repository = repository
            self.actions = actions
        }
    }

    /// The audience every proxy token carries.
    public static let audience = "oci-connector-proxy"

    enum CodingKeys: String, CodingKey {
        case subject = "sub", connectors, actions, repositories, issuedAt = "iat", notBefore = "nbf", expiresAt = "exp"
        case id = "jti", audience = "aud", issuer = "iss", access
    }

    /// Throws unless `now` lies in the claims' validity period.
    public func checkValidity(at now: Date) throws(ProxyTokenError) {
        let seconds = Int(now.timeIntervalSince1970)
        guard seconds < expiresAt else { throw ProxyTokenError("the token has expired") }
        guard seconds >= notBefore else { throw ProxyTokenError("the token is not valid yet") }
    }

    /// Creates claims valid from `now` for `lifetime` seconds.
    public init(
        subject: String, connectors: [String], actions: [String], repositories: [String]? = nil,
        lifetime: Int, now: Date = Date(), id: String = UUID().uuidString
    ) {
        let issued = Int(now.timeIntervalSince1970)
        self.subject = subject
        self.connectors = connectors.sorted()
        self.actions = Array(Set(actions)).sorted()
        self.repositories = repositories
        self.issuedAt = issued
        self.notBefore = issued - 30  // Tolerates small clock differences between minter and proxy.
        self.expiresAt = issued + lifetime
        self.id = id
    }

    /// Creates claims that allow exactly `access`, valid from `now` for `lifetime` seconds.
    public init(subject: String, access: [Access], lifetime: Int, now: Date = Date(), id: String = UUID().uuidString) {
        self.init(
            subject: subject, connectors: Array(Set(access.map(\.connector))), actions: access.flatMap(\.actions),
            repositories: Array(Set(access.map(\.repository))).sorted(), lifetime: lifetime, now: now, id: id)
        self.access = access
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        guard try container.decode(String.self, forKey: .audience) == Self.audience else {
            throw DecodingError.dataCorruptedError(forKey: .audience, in: container, debugDescription: "wrong audience")
        }
        subject = try container.decode(String.self, forKey: .subject)
        connectors = try container.decode([String].self, forKey: .connectors)
        actions = try container.decode([String].self, forKey: .actions)
        repositories = try container.decodeIfPresent([String].self, forKey: .repositories)
        issuedAt = try container.decode(Int.self, forKey: .issuedAt)
        notBefore = try container.decode(Int.self, forKey: .notBefore)
        expiresAt = try container.decode(Int.self, forKey: .expiresAt)
        id = try container.decode(String.self, forKey: .id)
        access = try container.decodeIfPresent([Access].self, forKey: .access)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(Self.audience, forKey: .audience)
        try container.encode("oci-connector", forKey: .issuer)
        try container.encode(subject, forKey: .subject)
        try container.encode(connectors, forKey: .connectors)
        try container.encode(actions, forKey: .actions)
        try container.encodeIfPresent(repositories, forKey: .repositories)
        try container.encode(issuedAt, forKey: .issuedAt)
        try container.encode(notBefore, forKey: .notBefore)
        try container.encode(expiresAt, forKey: .expiresAt)
        try container.encode(id, forKey: .id)
        try container.encodeIfPresent(access, forKey: .access)
    }

    /// Whether these claims allow `action` on `repository` through `connector`.
    public func allows(connector: String, action: String, repository: String?) -> Bool {
        if let access {
            return access.contains { entry in
                entry.connector == connector && entry.actions.contains(action)
                    && (repository.map { $0 == entry.repository } ?? true)
            }
        }
        guard connectors.contains(connector), actions.contains(action) else { return false }
        guard let repository, let repositories else { return true }
        return repositories.contains { RepositoryPattern.matches($0, repository) }
    }
}

/// Why a proxy token was not accepted. Messages never include the token.
public struct ProxyTokenError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The reason, for the client's error body and the log.
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}
