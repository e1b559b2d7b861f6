/// Maps connectors to per-connector host names and back, for the proxy's host form, such as
/// `c-{name}.{namespace}.svc.cluster.local`.
///
/// The pattern holds the placeholders `{name}` and `{namespace}` between literal text. Matching a
/// host is case-insensitive and ignores a port.
public struct ConnectorHostPattern: Hashable, Sendable, CustomStringConvertible {
    enum Piece: Hashable, Sendable {
        case literal(String)
        case name
        case namespace
    }

    /// The pattern as written.
    public let pattern: String
    let pieces: [Piece]

    /// The pattern of Kubernetes Service names the reference system uses.
    public static let kubernetesService = try! ConnectorHostPattern("c-{name}.{namespace}.svc.cluster.local")

    /// Parses a pattern; it must hold `{name}` and `{namespace}` exactly once each.
    public init(_ pattern: String) throws(ReferenceError) {
        var pieces: [Piece] = []
        var rest = Substring(pattern)
        while !rest.isEmpty {
            if rest.hasPrefix("{name}") {
                pieces.append(.name)
                rest = rest.dropFirst(6)
            } else if rest.hasPrefix("{namespace}") {
                pieces.append(.namespace)
                rest = rest.dropFirst(11)
            } else {
                let end = rest.dropFirst().firstIndex(of: "{") ?? rest.endIndex
                let literal = rest[..<end].lowercased()
                if case .literal(let previous)? = pieces.last {
                    pieces[pieces.count - 1] = .literal(previous + literal)
                } else {
                    pieces.append(.literal(literal))
                }
                rest = rest[end...]
            }
        }
        guard pieces.filter({ $0 == .name }).count == 1, pieces.filter({ $0 == .namespace }).count == 1 else {
            throw ReferenceError(
                .invalidAddress, input: pattern,
                reason: "a host pattern must hold {name} and {namespace} once each")
        }
        if zip(pieces, pieces.dropFirst()).contains(where: { !$0.isLiteral && !$1.isLiteral }) {
            throw ReferenceError(
                .invalidAddress, input: pattern,
                reason: "{name} and {namespace} must be separated by literal text")
        }
        self.pattern = pattern
        self.pieces = pieces
    }

    /// The host name for a connector.
    public func host(for connector: ConnectorID) -> String {
        pieces.map { piece in
            switch piece {
            case .literal(let text): text
            case .name: connector.name
            case .namespace: connector.namespace
            }
        }.joined()
    }

    /// The connector a `Host` header names, if it matches the pattern.
    public func connector(forHost hostHeader: some StringProtocol) -> ConnectorID? {
        var host = Substring(hostHeader.lowercased())
        if let colon = host.lastIndex(of: ":"), !host.hasSuffix("]") {
            host = host[..<colon]
        }
        if host.hasSuffix(".") { host = host.dropLast() }
        var captured: (name: Substring?, namespace: Substring?) = (nil, nil)
        guard match(pieces[...], host, &captured),
            let name = captured.name, let namespace = captured.namespace
        else { return nil }
        return try? ConnectorID(namespace: String(namespace), name: String(name))
    }

    public var description: String { pattern }

    /// Matches with backtracking: a placeholder takes the shortest run that lets the rest match,
    /// growing until it does. Names may hold dots, so several splits can be tried.
    private func match(
        _ pieces: ArraySlice<Piece>, _ host: Substring,
        _ captured: inout (name: Substring?, namespace: Substring?)
    ) -> Bool {
        guard let piece = pieces.first else { return host.isEmpty }
        let rest = pieces.dropFirst()
        switch piece {
        case .literal(let text):
            guard host.hasPrefix(text) else { return false }
            return match(rest, host.dropFirst(text.count), &captured)
        case .name, .namespace:
            var end = host.startIndex
            while end < host.endIndex {
                // A namespace is a single DNS label: it never spans a dot.
                if piece == .namespace, host[end] == "." { return false }
                end = host.index(after: end)
                let value = host[..<end]
                if piece == .name { captured.name = value } else { captured.namespace = value }
                if match(rest, host[end...], &captured) { return true }
            }
            return false
        }
    }
}

extension ConnectorHostPattern.Piece {
    var isLiteral: Bool {
        if case .literal = self { return true }
        return false
    }
}
