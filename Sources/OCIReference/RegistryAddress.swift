/// Where a registry's API is served: a scheme, a host and an optional port, as written in a
/// Connector's `spec.address` (`https://harbor.example.com`, `http://127.0.0.1:5000`).
///
/// The ``registryName`` is what image references use (`docker.io`, default ports dropped);
/// ``endpoint`` is what to connect to (`registry-1.docker.io`).
public struct RegistryAddress: Hashable, Sendable, CustomStringConvertible {
    /// `http` or `https`.
    public enum Scheme: String, Hashable, Sendable {
        case http
        case https

        /// The port used when none is written.
        public var defaultPort: Int { self == .https ? 443 : 80 }
    }

    /// The scheme to connect with.
    public let scheme: Scheme
    /// The host: a DNS name, an IPv4 address, or an IPv6 address in brackets.
    public let host: String
    /// The port, when it is not the scheme's default.
    public let port: Int?

    /// Creates an address from its parts, checking the host.
    public init(scheme: Scheme, host: String, port: Int? = nil) throws(ReferenceError) {
        let input = "\(scheme.rawValue)://\(host)\(port.map { ":\($0)" } ?? "")"
        guard Self.isValidHost(host) else {
            throw ReferenceError(.invalidAddress, input: input, reason: "the host is not a valid DNS name or IP address")
        }
        if let port, !(1...65535).contains(port) {
            throw ReferenceError(.invalidAddress, input: input, reason: "the port must be between 1 and 65535")
        }
        self.scheme = scheme
        self.host = host
        self.port = port == scheme.defaultPort ? nil : port
    }

    /// Parses `scheme://host[:port][/]`. Without a scheme, `https` is assumed, as container
    /// clients do.
    public init(parsing text: String) throws(ReferenceError) {
        var rest = Substring(text)
        var scheme = Scheme.https
        if let separator = rest.firstRange(of: "://") {
            guard let parsed = Scheme(rawValue: rest[..<separator.lowerBound].lowercased()) else {
                throw ReferenceError(.invalidAddress, input: text, reason: "the scheme must be http or https")
            }
            scheme = parsed
            rest = rest[separator.upperBound...]
        }
        if rest.hasSuffix("/") { rest = rest.dropLast() }
        guard !rest.isEmpty else {
            throw ReferenceError(.invalidAddress, input: text, reason: "the address has no host")
        }
        guard !rest.contains("/"), !rest.contains("?"), !rest.contains("#"), !rest.contains("@") else {
            throw ReferenceError(
                .invalidAddress, input: text,
                reason: "a registry address is scheme://host[:port], without path, query or user information")
        }
        var host = rest
        var port: Int?
        let portSeparator: Substring.Index? =
            if rest.hasPrefix("[") {
                rest.firstIndex(of: "]").flatMap { close in rest[close...].firstIndex(of: ":") }
            } else {
                rest.firstIndex(of: ":")
            }
        if let colon = portSeparator {
            host = rest[..<colon]
            guard let number = Int(rest[rest.index(after: colon)...]) else {
                throw ReferenceError(.invalidAddress, input: text, reason: "the port must be a number")
            }
            port = number
        }
        do {
            try self.init(scheme: scheme, host: String(host), port: port)
        } catch {
            throw ReferenceError(error.code, input: text, reason: error.reason)
        }
    }

    /// `host[:port]`, the port only when it is not the scheme's default.
    public var authority: String {
        port.map { "\(host):\($0)" } ?? host
    }

    /// The name image references use for this registry: ``authority``, with Docker Hub's API
    /// hosts read as `docker.io`.
    public var registryName: String {
        let authority = self.authority
        if authority == DockerHub.apiEndpoint { return DockerHub.registryName }
        return DockerHub.canonicalRegistry(authority)
    }

    /// The host and port to connect to for the API: `registry-1.docker.io` for Docker Hub.
    public var endpoint: String {
        DockerHub.endpoint(forRegistry: registryName)
    }

    /// The host to connect to for the API: ``endpoint``'s host, without IPv6 brackets.
    public var connectHost: String {
        let host = registryName == DockerHub.registryName ? DockerHub.apiEndpoint : self.host
        return host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
    }

    /// The port to connect to for the API.
    public var connectPort: Int { port ?? scheme.defaultPort }

    /// The base URL of the API endpoint, such as `https://harbor.example.com`.
    public var baseURL: String { "\(scheme.rawValue)://\(endpoint)" }

    public var description: String { baseURL }

    package static func isValidHost(_ host: String) -> Bool {
        var copy = host
        copy.makeContiguousUTF8()
        return copy.utf8.withContiguousStorageIfAvailable { bytes in
            !bytes.contains(ASCII.colon) || bytes.first == ASCII.openBracket
                ? GrammarScanner.domainProblem(bytes, 0..<bytes.count) == nil && !hasPort(bytes)
                : false
        } ?? false
    }

    private static func hasPort(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        bytes.first == ASCII.openBracket ? bytes.last != ASCII.closeBracket : bytes.contains(ASCII.colon)
    }
}
