public import OCIReference

/// Which files to render: `registry-config,buildkitd,…` picks kinds, `!NAME` drops a kind or a
/// file after everything is merged. The files that hold the proxy address and token for scripts
/// (`.env`, `context.token`, `connector.status.proxyAddress`, `flags`) are always rendered unless
/// dropped.
public struct Selection: Hashable, Sendable {
    /// A kind of client configuration.
    public enum Kind: String, CaseIterable, Sendable, Comparable {
        case registryConfig = "registry-config"
        case buildkitd
        case dockerd
        case containers
        case containerd
        case mirror
        case pullSecret = "pull-secret"

        public static func < (lhs: Kind, rhs: Kind) -> Bool { lhs.rawValue < rhs.rawValue }
    }

    /// The files every selection includes.
    public static let builtInFiles = [".env", "context.token", "connector.status.proxyAddress", "flags"]

    /// The kinds to render.
    public let kinds: Set<Kind>
    /// Kinds or file paths to drop.
    public let excluded: Set<String>

    /// Everything.
    public static let all = Selection(kinds: Set(Kind.allCases), excluded: [])

    /// Creates a selection.
    public init(kinds: Set<Kind>, excluded: Set<String>) {
        self.kinds = kinds
        self.excluded = excluded
    }

    /// Parses `kind,kind,!name`; only exclusions means "everything but these".
    ///
    /// - Throws: ``ReferenceError`` naming an unknown kind or file.
    public init(parsing text: String) throws(ReferenceError) {
        var kinds: Set<Kind> = []
        var excluded: Set<String> = []
        let knownFiles = Set(
            Self.builtInFiles + ["config.json", "buildkitd.toml", "daemon.json", "registries.conf", "pull-secret.yaml"])
        for item in text.split(separator: ",").map({ String($0).trimmingSpaces }) where !item.isEmpty {
            if item.hasPrefix("!") {
                let name = String(item.dropFirst())
                guard Kind(rawValue: name) != nil || knownFiles.contains(name) || name.hasPrefix("certs.d/") else {
                    throw ReferenceError(.invalidAddress, input: text, reason: "unknown selection \(name) to exclude")
                }
                excluded.insert(name)
            } else if let kind = Kind(rawValue: item) {
                kinds.insert(kind)
            } else {
                throw ReferenceError(
                    .invalidAddress, input: text,
                    reason: "unknown selection \(item); known: \(Kind.allCases.map(\.rawValue).joined(separator: ", "))")
            }
        }
        self.kinds = kinds.isEmpty ? Set(Kind.allCases) : kinds
        self.excluded = excluded
    }

    /// Whether a kind is rendered.
    public func includes(_ kind: Kind) -> Bool {
        kinds.contains(kind) && !excluded.contains(kind.rawValue)
    }
}

extension String {
    var trimmingSpaces: String {
        String(drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
    }
}
