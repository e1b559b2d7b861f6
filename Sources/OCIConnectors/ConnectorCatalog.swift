import Foundation
public import OCIReference
import Yams

/// The connectors an installation knows, loaded from Kubernetes-style YAML.
///
/// The files hold `Connector` and `Secret` documents exactly as users of the Kubernetes
/// Connectors product write them (several per file separated by `---`, or a `kind: List`), and
/// ``ConnectorBinding`` documents. Unknown fields are ignored.
///
/// ```yaml
/// apiVersion: connectors.alauda.io/v1alpha1
/// kind: Connector
/// metadata: {name: harbor, namespace: team-a}
/// spec:
///   address: https://harbor.example.com
///   auth:
///     secretRef: {name: harbor-secret}
///     params: [{name: repository, value: team/app}]
/// ---
/// apiVersion: v1
/// kind: Secret
/// metadata: {name: harbor-secret, namespace: team-a}
/// type: cpaas.io/distribution-registry-token
/// stringData: {username: robot$ci, password: s3cret}
/// ```
public struct ConnectorCatalog: Sendable {
    /// The connectors by identifier.
    public let connectors: [ConnectorID: Connector]
    /// Who may use them with a Kubernetes identity (`ConnectorBinding` documents).
    public let bindings: [ConnectorBinding]

    /// Creates a catalog from connectors.
    public init(_ connectors: [Connector]) {
        self.init(connectors, bindings: [])
    }

    /// Creates a catalog from connectors and the bindings that grant their use.
    public init(_ connectors: [Connector], bindings: [ConnectorBinding]) {
        self.connectors = Dictionary(connectors.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        self.bindings = bindings
    }

    /// The bindings that name the user `username` or one of its `groups`.
    public func bindings(forUser username: String, groups: [String]) -> [ConnectorBinding] {
        bindings.filter { $0.applies(toUser: username, groups: groups) }
    }

    /// The connector with this identifier.
    ///
    /// - Throws: ``ConnectorConfigError`` naming the known connectors when there is none.
    public func connector(_ id: ConnectorID) throws(ConnectorConfigError) -> Connector {
        guard let connector = connectors[id] else {
            let known = connectors.keys.sorted().map(\.description).joined(separator: ", ")
            throw ConnectorConfigError(
                file: nil, document: nil, field: nil,
                reason: "no connector \(id) is defined" + (known.isEmpty ? "" : " (known: \(known))"))
        }
        return connector
    }

    /// Loads every `.yaml`, `.yml` and `.json` file at the given paths (files, or directories
    /// read one level deep in name order).
    public static func load(from paths: [String]) throws(ConnectorConfigError) -> ConnectorCatalog {
        var documents: [SourceDocument] = []
        for path in paths {
            for file in try files(at: path) {
                let text: String
                do {
                    text = try String(contentsOfFile: file, encoding: .utf8)
                } catch {
                    throw ConnectorConfigError(file: file, document: nil, field: nil, reason: "cannot be read")
                }
                documents += try SourceDocument.parse(text, file: file)
            }
        }
        return try build(from: documents)
    }

    /// Loads connectors from YAML text; `file` names the source in error messages.
    public static func parse(yaml text: String, file: String = "(input)") throws(ConnectorConfigError) -> ConnectorCatalog {
        try build(from: SourceDocument.parse(text, file: file))
    }

    private static func files(at path: String) throws(ConnectorConfigError) -> [String] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw ConnectorConfigError(file: path, document: nil, field: nil, reason: "does not exist")
        }
        guard isDirectory.boolValue else { return [path] }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        return
            names
            .filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") || $0.hasSuffix(".json") }
            .filter { !$0.hasPrefix(".") }
            .sorted()
            .map { (path as NSString).appendingPathComponent($0) }
    }

    private static func build(from documents: [SourceDocument]) throws(ConnectorConfigError) -> ConnectorCatalog {
        var secrets: [ObjectKey: SecretDocument] = [:]
        var connectorDocuments: [SourceDocument] = []
        var bindings: [ObjectKey: ConnectorBinding] = [:]
        for document in documents {
            switch document.kind {
            case "Secret":
                let secret = try SecretDocument(document)
                secrets[secret.key] = secret
            case "Connector":
                connectorDocuments.append(document)
            case "ConnectorBinding":
                // Another project's kind of the same name is not ours to read.
                if let version = document.string("apiVersion"), version != ConnectorBinding.apiVersion { continue }
                let binding = try ConnectorBindingDocument.read(document)
                let key = ObjectKey(namespace: binding.namespace, name: binding.name)
                if let existing = bindings[key] {
                    throw document.error(
                        field: "metadata.name",
                        "binding \(binding.namespace)/\(binding.name) is defined twice (first in \(existing.origin))")
                }
                bindings[key] = binding
            default:
                continue  // Other objects may share the files; they are not ours to read.
            }
        }
        var connectors: [ConnectorID: Connector] = [:]
        for document in connectorDocuments {
            let connector = try ConnectorDocument.read(document, secrets: secrets)
            if let existing = connectors[connector.id] {
                throw document.error(
                    field: "metadata.name",
                    "connector \(connector.id) is defined twice (first in \(existing.origin))")
            }
            connectors[connector.id] = connector
        }
        let ordered = bindings.keys.sorted { ($0.namespace, $0.name) < ($1.namespace, $1.name) }.compactMap { bindings[$0] }
        return ConnectorCatalog(Array(connectors.values), bindings: ordered)
    }
}

/// Why connectors could not be loaded: the file, the document and the field at fault.
public struct ConnectorConfigError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The file, when the problem is in one.
    public let file: String?
    /// The 1-based document number within the file.
    public let document: Int?
    /// The field path, such as `spec.address`.
    public let field: String?
    /// What is wrong. Never includes a credential.
    public let reason: String

    /// Creates an error.
    public init(file: String?, document: Int?, field: String?, reason: String) {
        self.file = file
        self.document = document
        self.field = field
        self.reason = reason
    }

    public var description: String {
        var place: [String] = []
        if let file { place.append(file) }
        if let document { place.append("document \(document)") }
        if let field { place.append("field \(field)") }
        return place.isEmpty ? reason : "\(place.joined(separator: ", ")): \(reason)"
    }
}

struct ObjectKey: Hashable {
    var namespace: String
    var name: String
}

/// One YAML document with where it came from.
struct SourceDocument {
    var node: Node
    var file: String
    var index: Int

    var kind: String? { node["kind"]?.scalar?.string }

    static func parse(_ text: String, file: String) throws(ConnectorConfigError) -> [SourceDocument] {
        var documents: [SourceDocument] = []
        do {
            var index = 0
            // Parser.nextRoot throws on malformed input; iterating compose_all would stop silently.
            let parser = try Parser(yaml: text)
            while let node = try parser.nextRoot() {
                index += 1
                // A `kind: List` carries its objects in `items`.
                if node["kind"]?.scalar?.string == "List", let items = node["items"]?.sequence {
                    documents += items.map { SourceDocument(node: $0, file: file, index: index) }
                } else if node.mapping != nil {
                    documents.append(SourceDocument(node: node, file: file, index: index))
                }
            }
        } catch let error as YamlError {
            throw ConnectorConfigError(
                file: file, document: nil, field: nil, reason: "is not valid YAML: \(Self.summary(of: error))")
        } catch {
            throw ConnectorConfigError(file: file, document: nil, field: nil, reason: "is not valid YAML")
        }
        return documents
    }

    /// The parser's message without the document's text, which may hold a secret.
    private static func summary(of error: YamlError) -> String {
        switch error {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
            .composer(let context, let problem, let mark, _):
            return "\(problem) at line \(mark.line), column \(mark.column)" + (context.map { " (\($0.text))" } ?? "")
        default:
            return "malformed document"
        }
    }

    func error(field: String?, _ reason: String) -> ConnectorConfigError {
        ConnectorConfigError(file: file, document: index, field: field, reason: reason)
    }

    /// The string at a dotted path, or `nil` when absent.
    func string(_ path: String) -> String? {
        node(path)?.scalar?.string
    }

    func node(_ path: String) -> Node? {
        var current: Node? = node
        for key in path.split(separator: ".") {
            current = current?[String(key)]
        }
        return current
    }

    func requiredString(_ path: String) throws(ConnectorConfigError) -> String {
        guard let node = node(path) else { throw error(field: path, "is required") }
        guard let value = node.scalar?.string, !value.isEmpty else { throw error(field: path, "must be a non-empty string") }
        return value
    }

    /// `metadata.namespace`, defaulting to `default` as Kubernetes does.
    func namespace() throws(ConnectorConfigError) -> String {
        guard let node = node("metadata.namespace") else { return ConnectorID.defaultNamespace }
        guard let value = node.scalar?.string, !value.isEmpty else {
            throw error(field: "metadata.namespace", "must be a non-empty string")
        }
        return value
    }
}
