/// An access scope of the distribution token protocol: `repository:team/app:pull,push`,
/// `registry:catalog:*`, or with a resource class, `repository(plugin):vieux/sshfs:pull`.
public struct Scope: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// `repository`, `registry`, …
    public let resourceType: String
    /// The optional resource class, such as `plugin`.
    public let resourceClass: String?
    /// The resource's name, such as `team/app` or `catalog`.
    public let resourceName: String
    /// The actions, sorted and without duplicates.
    public let actions: [String]

    /// Creates a scope; actions are sorted and deduplicated.
    public init(resourceType: String, resourceClass: String? = nil, resourceName: String, actions: some Sequence<String>) {
        self.resourceType = resourceType
        self.resourceClass = resourceClass
        self.resourceName = resourceName
        self.actions = Array(Set(actions.filter { !$0.isEmpty })).sorted()
    }

    /// A repository scope.
    public static func repository(_ name: String, actions: [String]) -> Scope {
        Scope(resourceType: "repository", resourceName: name, actions: actions)
    }

    /// `registry:catalog:*`, for listing repositories.
    public static let catalog = Scope(resourceType: "registry", resourceName: "catalog", actions: ["*"])

    /// Parses `type[(class)]:name:action[,action…]`. The name may itself hold colons (a host with
    /// a port, for example): the type ends at the first colon and the actions follow the last.
    public init?(parsing text: some StringProtocol) {
        // Split on Unicode scalars, not characters: a colon or a parenthesis followed by a
        // combining mark is one character, and would hide the separator.
        let scalars = Substring(text).unicodeScalars
        guard let firstColon = scalars.firstIndex(of: ":"), let lastColon = scalars.lastIndex(of: ":"), firstColon < lastColon
        else { return nil }
        var type = Substring(scalars[..<firstColon]).unicodeScalars
        var resourceClass: String?
        if let open = type.firstIndex(of: "("), type.last == ")" {
            resourceClass = String(Substring(type[type.index(after: open)..<type.index(before: type.endIndex)]))
            type = type[..<open]
            guard resourceClass?.isEmpty == false else { return nil }
        }
        let name = Substring(scalars[scalars.index(after: firstColon)..<lastColon])
        let actions = scalars[scalars.index(after: lastColon)...].split(separator: ",").map { String(Substring($0)) }
        guard !type.isEmpty, !name.isEmpty else { return nil }
        self.init(
            resourceType: String(Substring(type)), resourceClass: resourceClass, resourceName: String(name), actions: actions)
    }

    /// The resource this scope is about, without its actions: scopes with equal resources merge.
    var resource: String {
        "\(resourceType)\(resourceClass.map { "(\($0))" } ?? ""):\(resourceName)"
    }

    public var description: String { "\(resource):\(actions.joined(separator: ","))" }

    public static func < (lhs: Scope, rhs: Scope) -> Bool {
        (lhs.resource, lhs.actions.joined(separator: ",")) < (rhs.resource, rhs.actions.joined(separator: ","))
    }

    /// Whether this scope grants at least the actions of `other` on the same resource.
    public func covers(_ other: Scope) -> Bool {
        resource == other.resource && (actions.contains("*") || Set(actions).isSuperset(of: other.actions))
    }
}

/// A normalised set of scopes: one entry per resource with the union of its actions, sorted, so
/// equal sets have one spelling and can key a token cache.
public struct ScopeSet: Hashable, Sendable, CustomStringConvertible, ExpressibleByArrayLiteral {
    /// The scopes, one per resource, sorted.
    public let scopes: [Scope]

    /// Merges scopes on the same resource and sorts them.
    public init(_ scopes: some Sequence<Scope>) {
        var byResource: [String: Scope] = [:]
        for scope in scopes {
            if let existing = byResource[scope.resource] {
                byResource[scope.resource] = Scope(
                    resourceType: scope.resourceType, resourceClass: scope.resourceClass,
                    resourceName: scope.resourceName, actions: existing.actions + scope.actions)
            } else {
                byResource[scope.resource] = scope
            }
        }
        self.scopes = byResource.values.sorted()
    }

    public init(arrayLiteral elements: Scope...) {
        self.init(elements)
    }

    /// Parses a space-separated list, as in a challenge's `scope` parameter; unreadable entries
    /// are skipped.
    public init(parsing text: some StringProtocol) {
        self.init(Substring(text).unicodeScalars.split(separator: " ").compactMap { Scope(parsing: Substring($0)) })
    }

    /// The empty set.
    public static let empty = ScopeSet([Scope]())

    /// Whether the set holds no scope.
    public var isEmpty: Bool { scopes.isEmpty }

    /// Both sets merged.
    public func union(_ other: ScopeSet) -> ScopeSet {
        ScopeSet(scopes + other.scopes)
    }

    /// Whether every scope of `other` is granted by a scope of this set.
    public func covers(_ other: ScopeSet) -> Bool {
        other.scopes.allSatisfy { wanted in scopes.contains { $0.covers(wanted) } }
    }

    /// The scopes joined by spaces: the canonical spelling.
    public var description: String { scopes.map(\.description).joined(separator: " ") }
}
