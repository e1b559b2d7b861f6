/// Why an image reference, digest, connector or request path could not be read or rewritten.
///
/// Errors are values: a stable ``Code`` to branch on, the offending input, and a sentence for
/// people. New codes may be added in minor releases, so switch over them with a default case.
public struct ReferenceError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A machine-readable kind of failure.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        /// The stable name of the code, such as `invalid-tag`.
        public let name: String

        private init(_ name: String) { self.name = name }

        public var description: String { name }

        /// The input was empty.
        public static let empty = Code("empty")
        /// The input does not follow the reference grammar.
        public static let invalidFormat = Code("invalid-format")
        /// The registry host or port is malformed.
        public static let invalidDomain = Code("invalid-domain")
        /// The repository name holds uppercase letters.
        public static let uppercaseRepository = Code("uppercase-repository")
        /// The repository name is longer than 255 characters once normalised.
        public static let nameTooLong = Code("name-too-long")
        /// The tag does not follow the tag grammar.
        public static let invalidTag = Code("invalid-tag")
        /// The digest does not follow the digest grammar or its algorithm's length.
        public static let invalidDigest = Code("invalid-digest")
        /// The name is 64 hexadecimal characters, which reads as an image ID, not a repository.
        public static let ambiguousHexName = Code("ambiguous-hex-name")
        /// A connector identifier is not `namespace/name` with Kubernetes object names.
        public static let invalidConnector = Code("invalid-connector")
        /// An upstream or proxy address is not a usable registry address.
        public static let invalidAddress = Code("invalid-address")
        /// The reference names a registry other than the connector's upstream.
        public static let registryMismatch = Code("registry-mismatch")
        /// A request path is not one of the distribution API's routes.
        public static let unknownRoute = Code("unknown-route")
        /// A request path names an upload session with characters an upload ID cannot hold.
        public static let invalidUploadID = Code("invalid-upload-id")
    }

    /// What kind of failure this is.
    public let code: Code
    /// The input that could not be read, as given.
    public let input: String
    /// A human-readable explanation of what is wrong.
    public let reason: String

    /// Creates an error with a code, the offending input and an explanation.
    public init(_ code: Code, input: String, reason: String) {
        self.code = code
        self.input = input
        self.reason = reason
    }

    public var description: String {
        "\(reason): \"\(input)\""
    }
}
