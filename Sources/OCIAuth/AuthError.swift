/// Why talking to an upstream registry, or getting a token for it, failed.
///
/// Messages name the registry, the realm and the scopes, never a credential or a token.
public struct AuthError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A machine-readable kind of failure.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        /// The stable name of the code.
        public let name: String
        private init(_ name: String) { self.name = name }
        public var description: String { name }

        /// The registry or its token server could not be reached.
        public static let unreachable = Code("unreachable")
        /// The registry or its token server did not connect or answer in time.
        public static let timedOut = Code("timed-out")
        /// The TLS handshake failed (untrusted certificate, wrong host name, …).
        public static let tlsFailure = Code("tls-failure")
        /// The registry or token server refused the credentials.
        public static let badCredentials = Code("bad-credentials")
        /// Authenticated, but not allowed the requested actions.
        public static let insufficientScope = Code("insufficient-scope")
        /// The repository does not exist.
        public static let repositoryNotFound = Code("repository-not-found")
        /// A `WWW-Authenticate` header could not be read or offered nothing usable.
        public static let malformedChallenge = Code("malformed-challenge")
        /// The token realm is not acceptable (for example, it downgrades https to http).
        public static let untrustedRealm = Code("untrusted-realm")
        /// The token server answered with something that is not a token.
        public static let invalidTokenResponse = Code("invalid-token-response")
        /// The registry answered in an unexpected way.
        public static let unexpectedResponse = Code("unexpected-response")
    }

    /// What kind of failure this is.
    public let code: Code
    /// A human-readable explanation.
    public let reason: String

    /// Creates an error.
    public init(_ code: Code, _ reason: String) {
        self.code = code
        self.reason = reason
    }

    public var description: String { reason }
}
