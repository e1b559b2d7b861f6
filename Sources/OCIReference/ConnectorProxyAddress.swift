/// How a workload reaches one connector's upstream registry through the proxy, and the rewriting
/// of image references between the two.
///
/// In the *path form* the connector is part of the repository name:
/// `harbor.example.com/test/abc:v1` becomes
/// `proxy.example:8080/namespaces/team-a/connectors/harbor/test/abc:v1`.
/// In the *host form* the proxy answers on a host of the connector's own:
/// `c-harbor.team-a.svc.cluster.local/test/abc:v1`.
public struct ConnectorProxyAddress: Hashable, Sendable {
    /// Where the connector's identity travels in the workload's requests.
    public enum Form: Hashable, Sendable {
        /// `PROXY/namespaces/NS/connectors/NAME/REPOSITORY`.
        case path
        /// `HOST/REPOSITORY`, on a host that belongs to the connector.
        case host
    }

    /// The connector this address serves.
    public let connector: ConnectorID
    /// The real registry behind the connector.
    public let upstream: RegistryAddress
    /// The proxy's address as workloads write it in references: `host[:port]`.
    public let proxyAuthority: String
    /// Path or host form.
    public let form: Form

    /// The first path elements of the repository names a workload sees in the path form.
    public static func repositoryPrefix(for connector: ConnectorID) -> String {
        "namespaces/\(connector.namespace)/connectors/\(connector.name)"
    }

    /// Creates an address. `proxy` is `host[:port]` or an `http(s)://host[:port]` URL.
    ///
    /// - Throws: ``ReferenceError/Code/invalidAddress`` when the proxy is not a registry address,
    ///   or when a client would read it as a Docker Hub namespace (a bare name such as `proxy`
    ///   with no dot, no port and not `localhost`).
    public init(connector: ConnectorID, upstream: RegistryAddress, proxy: String, form: Form = .path) throws(ReferenceError) {
        let address = try RegistryAddress(parsing: proxy)
        let authority = address.authority
        let readsAsRegistry = authority.contains(".") || authority.contains(":") || authority == "localhost"
        guard readsAsRegistry else {
            throw ReferenceError(
                .invalidAddress, input: proxy,
                reason:
                    "clients would read this proxy host as a Docker Hub namespace; use a name with a dot, a port, or localhost")
        }
        self.connector = connector
        self.upstream = upstream
        self.proxyAuthority = authority
        self.form = form
    }

    /// The repository prefix workloads see: ``repositoryPrefix(for:)`` in the path form, empty in
    /// the host form.
    public var repositoryPrefix: String {
        form == .path ? Self.repositoryPrefix(for: connector) : ""
    }

    /// What replaces the upstream registry name in a reference: the proxy's authority followed by
    /// the connector's prefix, such as `proxy.example:8080/namespaces/team-a/connectors/harbor`.
    /// This is also the location a registry mirror entry points at.
    public var proxiedRegistryPrefix: String {
        form == .path ? "\(proxyAuthority)/\(repositoryPrefix)" : proxyAuthority
    }

    /// Rewrites a reference to the upstream registry into the reference a workload uses.
    ///
    /// - Throws: ``ReferenceError/Code/registryMismatch`` when the reference is for another
    ///   registry, ``ReferenceError/Code/nameTooLong`` when the prefixed repository passes 255
    ///   characters.
    public func rewrite(_ reference: ImageReference) throws(ReferenceError) -> ImageReference {
        guard Self.sameRegistry(reference.registry, upstream.registryName) else {
            throw ReferenceError(
                .registryMismatch, input: reference.string,
                reason:
                    "the reference is for registry \(reference.registry), but connector \(connector) serves \(upstream.registryName)"
            )
        }
        let rewritten = "\(proxiedRegistryPrefix)/\(reference.repository)\(reference.tagAndDigestSuffix)"
        do {
            return try ImageReference(parsing: rewritten)
        } catch {
            throw ReferenceError(
                error.code, input: reference.string,
                reason: "the rewritten reference \(rewritten) is not valid: \(error.reason)")
        }
    }

    /// Turns a reference a workload used back into the upstream reference.
    ///
    /// - Throws: ``ReferenceError/Code/registryMismatch`` when the reference does not go through
    ///   this connector's proxy address.
    public func upstreamReference(for proxied: ImageReference) throws(ReferenceError) -> ImageReference {
        let prefix = repositoryPrefix
        let repository = proxied.repository
        let upstreamRepository: Substring
        if prefix.isEmpty {
            upstreamRepository = Substring(repository)
        } else if repository.hasPrefix(prefix + "/") {
            upstreamRepository = repository.dropFirst(prefix.count + 1)
        } else {
            upstreamRepository = ""
        }
        guard Self.sameRegistry(proxied.registry, proxyAuthority), !upstreamRepository.isEmpty else {
            throw ReferenceError(
                .registryMismatch, input: proxied.string,
                reason: "the reference does not go through \(proxiedRegistryPrefix)")
        }
        return try ImageReference(parsing: "\(upstream.registryName)/\(upstreamRepository)\(proxied.tagAndDigestSuffix)")
    }

    /// Registry names compare without regard to the case of the host.
    static func sameRegistry(_ lhs: String, _ rhs: String) -> Bool {
        lhs.utf8.count == rhs.utf8.count && lhs.lowercased() == rhs.lowercased()
    }
}
