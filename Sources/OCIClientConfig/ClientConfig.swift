public import OCIConnectors
public import OCIReference

/// Everything a workload mounts to reach its registries through the proxy, rendered from the
/// connectors, the proxy's address and a proxy token.
///
/// Rendering is pure: it returns files (``RenderedFile``) with deterministic, exactly escaped
/// contents; ``ConfigWriter`` puts them on disk atomically.
public struct ClientConfig: Sendable {
    /// One connector as the workload reaches it.
    public struct Endpoint: Sendable {
        /// The connector.
        public let connector: ConnectorID
        /// Its upstream registry.
        public let upstream: RegistryAddress
        /// How the workload addresses it through the proxy.
        public let address: ConnectorProxyAddress
    }

    /// The connectors, sorted by identifier.
    public let endpoints: [Endpoint]
    /// The proxy's URL, such as `http://proxy.example:8080`.
    public let proxy: RegistryAddress
    /// The proxy token.
    public let token: String
    /// The username paired with the token in Basic credentials (the proxy ignores it).
    public let username: String
    /// The CA that workloads trust the proxy's certificate by; `nil` treats an https proxy as
    /// insecure (its certificate is not checked). Meaningful for an https proxy only.
    public var trust: ProxyTrust?

    /// Creates a configuration for `connectors` behind the proxy at `proxyURL` (`http(s)://host[:port]`).
    public init(connectors: [Connector], proxyURL: String, token: String, username: String = "oci-connector")
        throws(ReferenceError)
    {
        let proxy = try RegistryAddress(parsing: proxyURL)
        var endpoints: [Endpoint] = []
        for connector in connectors.sorted(by: { $0.id < $1.id }) {
            let address = try ConnectorProxyAddress(
                connector: connector.id, upstream: connector.address, proxy: proxy.authority, form: .path)
            endpoints.append(Endpoint(connector: connector.id, upstream: connector.address, address: address))
        }
        self.endpoints = endpoints
        self.proxy = proxy
        self.token = token
        self.username = username
    }

    /// The host workloads write in references: `host[:port]` of the proxy.
    public var proxyHost: String { proxy.authority }
    /// `http://host[:port]`.
    public var proxyURL: String { "\(proxy.scheme.rawValue)://\(proxy.authority)" }
    /// Whether the proxy is reached over plain HTTP.
    public var plainHTTP: Bool { proxy.scheme == .http }
    /// Whether clients check the proxy's certificate against ``trust``.
    public var verifiesProxy: Bool { !plainHTTP && trust != nil }
    /// Where the workload finds the proxy's CA: `certs.d/PROXY/ca.crt` below the mount path.
    public var caPath: String? {
        trust.map { "\($0.mountPath.hasSuffix("/") ? String($0.mountPath.dropLast()) : $0.mountPath)/\(caFile)" }
    }
    /// The CA file's path below the rendered directory.
    var caFile: String { "certs.d/\(proxyHost)/ca.crt" }
}

/// The certificate authority an https proxy's certificate is checked against, and where the
/// workload mounts the rendered files, so that files naming the CA by path find it.
public struct ProxyTrust: Sendable, Hashable {
    /// The CA certificate(s), PEM.
    public var certificatePEM: String
    /// The directory the rendered files are mounted at in the workload, such as
    /// `/etc/oci-connector`.
    public var mountPath: String

    /// Creates a trust.
    public init(certificatePEM: String, mountPath: String) {
        self.certificatePEM = certificatePEM
        self.mountPath = mountPath
    }
}

/// One file to write: a path relative to the output directory, its text, and whether it holds a
/// credential (then it is written with mode 0600).
public struct RenderedFile: Hashable, Sendable {
    /// The path below the output directory, such as `certs.d/proxy:8080/hosts.toml`.
    public let path: String
    /// The contents.
    public let contents: String
    /// Whether the file holds the token.
    public let isSecret: Bool

    /// Creates a file.
    public init(path: String, contents: String, isSecret: Bool) {
        self.path = path
        self.contents = contents
        self.isSecret = isSecret
    }
}
