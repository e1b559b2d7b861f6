public import OCIReference

/// One upstream registry and how to authenticate to it, as a `Connector` object and its
/// `Secret` describe them.
public struct Connector: Hashable, Sendable, CustomStringConvertible {
    /// `namespace/name` of the Connector object.
    public let id: ConnectorID
    /// `spec.address`: where the upstream registry's API is served.
    public let address: RegistryAddress
    /// The credentials from the referenced Secret; `nil` for anonymous access.
    public let credentials: RegistryCredentials?
    /// `spec.auth.name`, such as `tokenAuth`, when given.
    public let authName: String?
    /// `spec.auth.params`, by name.
    public let parameters: [String: String]
    /// PEM certificates to trust for this upstream in addition to the system's (`spec.tls`).
    public let trustedCertificatesPEM: String?
    /// Where the connector was defined, for messages: `FILE, document N`.
    public let origin: String

    /// Creates a connector.
    public init(
        id: ConnectorID, address: RegistryAddress, credentials: RegistryCredentials? = nil, authName: String? = nil,
        parameters: [String: String] = [:], trustedCertificatesPEM: String? = nil, origin: String = "(code)"
    ) {
        self.id = id
        self.address = address
        self.credentials = credentials
        self.authName = authName
        self.parameters = parameters
        self.trustedCertificatesPEM = trustedCertificatesPEM
        self.origin = origin
    }

    /// The repository the health check reads (`spec.auth.params` named `repository`).
    public var healthCheckRepository: String? { parameters["repository"] }

    /// Whether the token endpoint should be asked with OAuth2 `POST` first (`spec.auth.params`
    /// named `tokenMethod` with the value `post`); the plain `GET` is used otherwise and as the
    /// fallback.
    public var prefersOAuth2: Bool { parameters["tokenMethod"]?.lowercased() == "post" }

    public var description: String { "Connector(\(id) → \(address))" }
}
