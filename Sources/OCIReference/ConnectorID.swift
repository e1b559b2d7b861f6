/// Identifies a connector: the Kubernetes namespace and name of its `Connector` object.
///
/// Written `namespace/name`; a bare `name` means the `default` namespace, as `kubectl` reads it.
/// Both parts are Kubernetes object names (the namespace a DNS-1123 label, the name a DNS-1123
/// subdomain), which also makes them valid repository path components.
public struct ConnectorID: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The namespace, such as `team-a`.
    public let namespace: String
    /// The connector's name, such as `harbor`.
    public let name: String

    /// The namespace used when none is given.
    public static let defaultNamespace = "default"

    /// Creates an identifier after checking both parts.
    public init(namespace: String, name: String) throws(ReferenceError) {
        if let problem = Self.labelProblem(namespace, maximumLength: 63, allowDots: false) {
            throw ReferenceError(.invalidConnector, input: "\(namespace)/\(name)", reason: "the namespace \(problem)")
        }
        if let problem = Self.labelProblem(name, maximumLength: 253, allowDots: true) {
            throw ReferenceError(.invalidConnector, input: "\(namespace)/\(name)", reason: "the connector name \(problem)")
        }
        self.namespace = namespace
        self.name = name
    }

    /// Parses `namespace/name`, or `name` in the default namespace.
    public init(parsing text: String) throws(ReferenceError) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        switch parts.count {
        case 1:
            try self.init(namespace: Self.defaultNamespace, name: text)
        case 2:
            try self.init(namespace: String(parts[0]), name: String(parts[1]))
        default:
            throw ReferenceError(.invalidConnector, input: text, reason: "a connector is written namespace/name")
        }
    }

    public var description: String { "\(namespace)/\(name)" }

    public static func < (lhs: ConnectorID, rhs: ConnectorID) -> Bool {
        (lhs.namespace, lhs.name) < (rhs.namespace, rhs.name)
    }

    /// DNS-1123: lowercase letters, digits and '-', starting and ending with a letter or digit;
    /// subdomains are such labels joined by '.'.
    static func labelProblem(_ value: String, maximumLength: Int, allowDots: Bool) -> String? {
        guard !value.isEmpty else { return "is empty" }
        guard value.utf8.count <= maximumLength else { return "is longer than \(maximumLength) characters" }
        var previous: UInt8 = ASCII.dot
        for byte in value.utf8 {
            if ASCII.isLowerAlphanumeric(byte) {
                previous = byte
                continue
            }
            if byte == ASCII.dash, previous != ASCII.dot {
                previous = byte
                continue
            }
            if allowDots, byte == ASCII.dot, ASCII.isLowerAlphanumeric(previous) {
                previous = byte
                continue
            }
            return
                "must be lowercase letters, digits and '-'\(allowDots ? " or '.'" : ""), starting and ending with a letter or digit"
        }
        guard ASCII.isLowerAlphanumeric(previous) else {
            return "must end with a letter or digit"
        }
        return nil
    }
}
