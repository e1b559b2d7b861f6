public import OCIReference

/// Who may use which connectors of a namespace, for what, and on which repositories: the owner
/// of a connector's credentials decides, as with a Kubernetes `RoleBinding`.
///
/// Workloads that present their Kubernetes service account token get exactly what the bindings
/// naming them grant; with no binding there is no access.
///
/// ```yaml
/// apiVersion: oci-connector.dev/v1alpha1
/// kind: ConnectorBinding
/// metadata: {name: ci-push, namespace: team-a}
/// spec:
///   connectors: [harbor]                          # connectors of this namespace
///   subjects:
///     - {kind: ServiceAccount, name: builder}     # namespace defaults to the binding's
///     - {kind: ServiceAccount, name: deployer, namespace: team-b}
///     - {kind: Group, name: "system:serviceaccounts:team-c"}
///   actions: [pull, push]                         # pull, push, delete
///   repositories: ["team/*"]                      # optional; ** crosses /
/// ```
public struct ConnectorBinding: Hashable, Sendable {
    /// Whom a binding names.
    public enum Subject: Hashable, Sendable {
        /// One service account.
        case serviceAccount(namespace: String, name: String)
        /// Every user in a group, such as `system:serviceaccounts:team-c` (all service accounts
        /// of a namespace) or `system:serviceaccounts` (all of them).
        case group(String)
        /// A user by name, such as `system:serviceaccount:team-a:builder`.
        case user(String)
    }

    /// The `apiVersion` of `ConnectorBinding` documents.
    public static let apiVersion = "oci-connector.dev/v1alpha1"
    /// The actions a binding can grant.
    public static let knownActions: Set<String> = ["pull", "push", "delete"]

    /// `metadata.namespace`: the namespace of the connectors it grants.
    public let namespace: String
    /// `metadata.name`.
    public let name: String
    /// `spec.connectors`: names of connectors in ``namespace``.
    public let connectors: Set<String>
    /// `spec.subjects`.
    public let subjects: [Subject]
    /// `spec.actions`: some of `pull`, `push`, `delete`.
    public let actions: Set<String>
    /// `spec.repositories`: upstream repository patterns (``RepositoryPattern``); `nil` allows all.
    public let repositories: [String]?
    /// Where it was defined, for messages: `FILE, document N`.
    public let origin: String

    /// Creates a binding.
    public init(
        namespace: String, name: String, connectors: Set<String>, subjects: [Subject], actions: Set<String>,
        repositories: [String]? = nil, origin: String = "(code)"
    ) {
        self.namespace = namespace
        self.name = name
        self.connectors = connectors
        self.subjects = subjects
        self.actions = actions
        self.repositories = repositories
        self.origin = origin
    }

    /// Whether it names the user `username` (`system:serviceaccount:NS:NAME` for a service
    /// account) or one of its `groups`.
    public func applies(toUser username: String, groups: some Sequence<String>) -> Bool {
        let groups = Set(groups)
        return subjects.contains { subject in
            switch subject {
            case .serviceAccount(let namespace, let name): username == "system:serviceaccount:\(namespace):\(name)"
            case .group(let group): groups.contains(group)
            case .user(let user): user == username
            }
        }
    }

    /// Whether it allows `action` on `repository` (`nil`: the connector itself) through `connector`.
    public func allows(connector: ConnectorID, action: String, repository: String?) -> Bool {
        guard connector.namespace == namespace, connectors.contains(connector.name), actions.contains(action) else {
            return false
        }
        guard let repository, let repositories else { return true }
        return repositories.contains { RepositoryPattern.matches($0, repository) }
    }
}

/// Reads a `ConnectorBinding` document.
enum ConnectorBindingDocument {
    static func read(_ document: SourceDocument) throws(ConnectorConfigError) -> ConnectorBinding {
        let namespace = try document.namespace()
        let name = try document.requiredString("metadata.name")
        let connectors = try strings(document, "spec.connectors")
        for connector in connectors {
            do {
                _ = try ConnectorID(namespace: namespace, name: connector)
            } catch {
                throw document.error(field: "spec.connectors", error.reason)
            }
        }
        guard let subjectNodes = document.node("spec.subjects")?.sequence, !subjectNodes.isEmpty else {
            throw document.error(field: "spec.subjects", "must be a non-empty list of {kind, name}")
        }
        var subjects: [ConnectorBinding.Subject] = []
        for (offset, node) in subjectNodes.enumerated() {
            let field = "spec.subjects[\(offset)]"
            guard let kind = node["kind"]?.scalar?.string else { throw document.error(field: field + ".kind", "is required") }
            guard let subjectName = node["name"]?.scalar?.string, !subjectName.isEmpty else {
                throw document.error(field: field + ".name", "is required")
            }
            switch kind {
            case "ServiceAccount":
                let subjectNamespace = node["namespace"]?.scalar?.string ?? namespace
                subjects.append(.serviceAccount(namespace: subjectNamespace, name: subjectName))
            case "Group": subjects.append(.group(subjectName))
            case "User": subjects.append(.user(subjectName))
            default:
                throw document.error(field: field + ".kind", "must be ServiceAccount, Group or User, not \(kind)")
            }
        }
        let actions = try strings(document, "spec.actions")
        if let unknown = actions.first(where: { !ConnectorBinding.knownActions.contains($0) }) {
            throw document.error(field: "spec.actions", "\(unknown) is not an action; use pull, push or delete")
        }
        var repositories: [String]?
        if document.node("spec.repositories") != nil {
            repositories = try strings(document, "spec.repositories")
        }
        return ConnectorBinding(
            namespace: namespace, name: name, connectors: Set(connectors), subjects: subjects, actions: Set(actions),
            repositories: repositories, origin: "\(document.file), document \(document.index)")
    }

    /// A non-empty list of non-empty strings.
    private static func strings(_ document: SourceDocument, _ path: String) throws(ConnectorConfigError) -> [String] {
        guard let items = document.node(path)?.sequence, !items.isEmpty else {
            throw document.error(field: path, "must be a non-empty list")
        }
        var values: [String] = []
        for item in items {
            guard let value = item.scalar?.string, !value.isEmpty else {
                throw document.error(field: path, "must hold non-empty strings")
            }
            values.append(value)
        }
        return values
    }
}
