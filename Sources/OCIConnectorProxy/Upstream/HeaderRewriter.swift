public import OCIReference

/// Rewrites what the upstream says about locations so the client keeps talking to the proxy.
///
/// An upload `Location` or a pagination `Link` names the upstream host and the upstream
/// repository; the client must see the proxy's scheme, host and port and the repository it
/// used (with the connector prefix in the path form). Every query parameter, such as `_state`,
/// is kept. Locations on other origins (object storage) are left alone.
public struct HeaderRewriter: Sendable {
    /// The client-facing origin, such as `http://proxy.example:8080`.
    public let clientOrigin: String
    /// The repository prefix the client uses, such as `namespaces/team-a/connectors/harbor`
    /// (empty in the host form).
    public let repositoryPrefix: String
    /// The upstream registry.
    public let upstream: RegistryAddress

    /// Creates a rewriter.
    public init(clientOrigin: String, repositoryPrefix: String, upstream: RegistryAddress) {
        self.clientOrigin = clientOrigin
        self.repositoryPrefix = repositoryPrefix
        self.upstream = upstream
    }

    /// The client-facing form of a `Location` value, or `nil` when it points somewhere other than
    /// the upstream registry's API.
    public func location(_ value: String) -> String? {
        guard let pathAndQuery = upstreamPath(value), pathAndQuery.hasPrefix("/v2/") else { return nil }
        let rest = pathAndQuery.dropFirst(4)
        return clientOrigin + "/v2/" + (repositoryPrefix.isEmpty ? "" : repositoryPrefix + "/") + rest
    }

    /// The client-facing form of a `Link` header: each `<URL>` on the upstream is rewritten.
    public func link(_ value: String) -> String {
        var output = ""
        var rest = Substring(value)
        while let open = rest.firstIndex(of: "<"), let close = rest[open...].firstIndex(of: ">") {
            output += rest[..<open]
            let target = String(rest[rest.index(after: open)..<close])
            output += "<" + (location(target) ?? target) + ">"
            rest = rest[rest.index(after: close)...]
        }
        return output + rest
    }

    /// The path and query of `value` when it is relative or on the upstream's origin.
    private func upstreamPath(_ value: String) -> String? {
        if value.hasPrefix("/") { return value }
        guard let schemeEnd = value.firstRange(of: "://") else { return nil }
        let scheme = value[..<schemeEnd.lowerBound].lowercased()
        let afterScheme = value[schemeEnd.upperBound...]
        let authorityEnd = afterScheme.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? afterScheme.endIndex
        let authority = afterScheme[..<authorityEnd].lowercased()
        guard let address = try? RegistryAddress(parsing: "\(scheme)://\(authority)"),
            address.scheme == upstream.scheme,
            address.authority.lowercased() == upstream.authority.lowercased()
                || address.authority.lowercased() == upstream.endpoint.lowercased()
        else { return nil }
        let path = afterScheme[authorityEnd...]
        return path.isEmpty ? "/" : String(path)
    }

    /// Headers that describe one connection, not the message: never forwarded either way
    /// (RFC 9110, section 7.6.1), plus those the proxy sets itself.
    public static let hopByHop: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer",
        "transfer-encoding", "upgrade", "host", "authorization", "content-length",
    ]

    /// Whether `name` is one of ``hopByHop``, in any case. Unlike a look-up of its lowercased
    /// form, this allocates nothing: it runs for every header of every relayed message. Its
    /// length picks the one or two names it is compared with.
    public static func isHopByHop(_ name: String) -> Bool {
        switch name.utf8.count {
        case 2: name.equalsIgnoringASCIICase("te")
        case 4: name.equalsIgnoringASCIICase("host")
        case 7: name.equalsIgnoringASCIICase("trailer") || name.equalsIgnoringASCIICase("upgrade")
        case 10: name.equalsIgnoringASCIICase("connection") || name.equalsIgnoringASCIICase("keep-alive")
        case 13: name.equalsIgnoringASCIICase("authorization")
        case 14: name.equalsIgnoringASCIICase("content-length")
        case 16: name.equalsIgnoringASCIICase("proxy-connection")
        case 17: name.equalsIgnoringASCIICase("transfer-encoding")
        case 18: name.equalsIgnoringASCIICase("proxy-authenticate")
        case 19: name.equalsIgnoringASCIICase("proxy-authorization")
        default: false
        }
    }

    /// Whether an upstream response header named `name` is withheld from the client: a
    /// hop-by-hop one, a challenge (the client authenticates to the proxy, not to the upstream)
    /// or a cookie (it belongs to the proxy's session with the upstream). Allocates nothing,
    /// like ``isHopByHop(_:)``.
    public static func isWithheldFromClient(_ name: String) -> Bool {
        switch name.utf8.count {
        case 10: name.equalsIgnoringASCIICase("set-cookie") || isHopByHop(name)
        case 16: name.equalsIgnoringASCIICase("www-authenticate") || isHopByHop(name)
        default: isHopByHop(name)
        }
    }
}

extension String {
    /// Whether this string equals `lowercased` (lowercase ASCII) once its ASCII capital letters
    /// are lowered; every other byte must match exactly.
    func equalsIgnoringASCIICase(_ lowercased: String) -> Bool {
        utf8.count == lowercased.utf8.count
            && zip(utf8, lowercased.utf8).allSatisfy { byte, lower in
                (byte &- UInt8(ascii: "A") < 26 ? byte | 0x20 : byte) == lower
            }
    }
}
