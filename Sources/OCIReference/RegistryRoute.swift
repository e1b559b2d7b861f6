/// A tag or a digest: what follows `manifests/` in a request path.
public enum ManifestReference: Hashable, Sendable, CustomStringConvertible {
    case tag(String)
    case digest(Digest)

    public var description: String {
        switch self {
        case .tag(let tag): tag
        case .digest(let digest): digest.string
        }
    }
}

/// The operation a repository request asks for, from the distribution API's routes.
public enum RegistryEndpoint: Hashable, Sendable {
    /// `manifests/<tag|digest>`
    case manifest(ManifestReference)
    /// `blobs/<digest>`
    case blob(Digest)
    /// `blobs/uploads/`: starts an upload (or mounts a blob).
    case uploadStart
    /// `blobs/uploads/<id>`: continues, finishes, inspects or cancels an upload.
    case upload(id: String)
    /// `tags/list`
    case tagList
    /// `referrers/<digest>`
    case referrers(Digest)

    /// The endpoint as it is written after the repository in a path, such as `blobs/uploads/`.
    public var path: String {
        switch self {
        case .manifest(let reference): "manifests/\(reference)"
        case .blob(let digest): "blobs/\(digest)"
        case .uploadStart: "blobs/uploads/"
        case .upload(let id): "blobs/uploads/\(id)"
        case .tagList: "tags/list"
        case .referrers(let digest): "referrers/\(digest)"
        }
    }
}

/// A request path of the distribution API (`/v2/…`), split into its parts.
///
/// The repository is found by reading the endpoint from the end of the path, so repositories
/// whose own elements are named `blobs`, `manifests`, `tags` or `uploads` split correctly:
/// `/v2/a/blobs/uploads/blobs/uploads/` is an upload to the repository `a/blobs/uploads`.
/// `blobs/uploads` without its trailing slash is read as the upload route too.
public enum RegistryRoute: Hashable, Sendable {
    /// `/v2/`: the API version check (and login probe).
    case base
    /// `/v2/_catalog`
    case catalog
    /// `/v2/<repository>/<endpoint>`
    case repository(name: String, endpoint: RegistryEndpoint)

    /// Splits a request path. A query string, if present, is ignored.
    ///
    /// - Throws: ``ReferenceError/Code/unknownRoute`` for paths outside the API;
    ///   repository, tag, digest and upload ID errors for malformed parts.
    public init(path: some StringProtocol) throws(ReferenceError) {
        try self.init(path: String(path))
    }

    /// Splits a request path, as the generic initialiser does. This one is not generic: the
    /// proxy splits the path of every request, and a generic call from another module looks up
    /// type metadata each time.
    public init(path: String) throws(ReferenceError) {
        self = try RouteParser.withBytes(of: path) { bytes, end in
            guard RouteParser.hasVersionPrefix(bytes, end) else {
                return .failure(ParseFailure(code: .unknownRoute, reason: "registry API paths start with /v2/"))
            }
            return RouteParser.route(bytes, from: 4, to: end)
        }
    }
}

/// A request to the proxy, split into the connector it addresses and the upstream route.
///
/// In the path form the connector is read from the path,
/// `/v2/namespaces/NS/connectors/NAME/<repository>/<endpoint>`, and the prefix is removed from
/// the repository. `/v2/` and `/v2/namespaces/NS/connectors/NAME/` are both API version checks.
public struct ConnectorRoute: Hashable, Sendable {
    /// The connector, or `nil` for the proxy-wide `/v2/`.
    public let connector: ConnectorID?
    /// The route as the upstream registry sees it.
    public let route: RegistryRoute

    /// Creates a route from its parts.
    public init(connector: ConnectorID?, route: RegistryRoute) {
        self.connector = connector
        self.route = route
    }

    /// Splits a path-form request path. A query string, if present, is ignored.
    public init(pathFormPath path: some StringProtocol) throws(ReferenceError) {
        try self.init(pathFormPath: String(path))
    }

    /// Splits a path-form request path, as the generic initialiser does; not generic, for the
    /// same reason as ``RegistryRoute``'s.
    public init(pathFormPath path: String) throws(ReferenceError) {
        self = try RouteParser.withBytes(of: path) { bytes, end in
            guard RouteParser.hasVersionPrefix(bytes, end) else {
                return .failure(ParseFailure(code: .unknownRoute, reason: "registry API paths start with /v2/"))
            }
            if end == 4 { return .success(ConnectorRoute(connector: nil, route: .base)) }
            return RouteParser.connectorRoute(bytes, from: 4, to: end)
        }
    }
}

/// Byte-level route splitting: paths are ASCII, and this runs for every proxied request.
enum RouteParser {
    typealias Bytes = UnsafeBufferPointer<UInt8>

    static func withBytes<Value>(
        of path: String,
        _ body: (Bytes, Int) -> Result<Value, ParseFailure>
    ) throws(ReferenceError) -> Value {
        var text = path
        text.makeContiguousUTF8()
        let outcome = text.utf8.withContiguousStorageIfAvailable { bytes in
            // A query string is not part of the route.
            body(bytes, bytes.firstIndex(of: UInt8(ascii: "?")) ?? bytes.count)
        }!
        switch outcome {
        case .success(let value): return value
        case .failure(let failure): throw ReferenceError(failure.code, input: text, reason: failure.reason)
        }
    }

    static func hasVersionPrefix(_ bytes: Bytes, _ end: Int) -> Bool {
        end >= 4 && ReferenceParser.equals(bytes, 0..<4, "/v2/")
    }

    static func connectorRoute(_ bytes: Bytes, from start: Int, to end: Int) -> Result<ConnectorRoute, ParseFailure> {
        // namespaces/NS/connectors/NAME/REST: where each of the first four segments ends, kept in
        // a tuple rather than an array, which would cost an allocation on every request.
        var ends = (-1, -1, -1, -1)
        var found = 0
        var index = start
        while index < end, found < 4 {
            if bytes[index] == ASCII.slash {
                switch found {
                case 0: ends.0 = index
                case 1: ends.1 = index
                case 2: ends.2 = index
                default: ends.3 = index
                }
                found += 1
            }
            index += 1
        }
        guard found == 4,
            ReferenceParser.equals(bytes, start..<ends.0, "namespaces"),
            ReferenceParser.equals(bytes, ends.1 + 1..<ends.2, "connectors")
        else {
            return .failure(
                ParseFailure(
                    code: .unknownRoute, reason: "proxy paths start with /v2/namespaces/NAMESPACE/connectors/NAME/"))
        }
        let segmentStart = ends.3 + 1
        let namespace = string(bytes, ends.0 + 1..<ends.1)
        let name = string(bytes, ends.2 + 1..<ends.3)
        let connector: ConnectorID
        do {
            connector = try ConnectorID(namespace: namespace, name: name)
        } catch {
            return .failure(ParseFailure(code: .invalidConnector, reason: error.reason))
        }
        return route(bytes, from: segmentStart, to: end).map { ConnectorRoute(connector: connector, route: $0) }
    }

    static func route(_ bytes: Bytes, from start: Int, to end: Int) -> Result<RegistryRoute, ParseFailure> {
        if start == end { return .success(.base) }
        if ReferenceParser.equals(bytes, start..<end, "_catalog") { return .success(.catalog) }
        let unknown = ParseFailure(code: .unknownRoute, reason: "not a distribution API route")

        // The last three "/" from the end bound the endpoint's segments.
        var slashes = (last: -1, second: -1, third: -1)
        var index = end - 1
        while index >= start {
            if bytes[index] == ASCII.slash {
                if slashes.last < 0 {
                    slashes.last = index
                } else if slashes.second < 0 {
                    slashes.second = index
                } else {
                    slashes.third = index
                    break
                }
            }
            index -= 1
        }
        guard slashes.second >= 0 else { return .failure(unknown) }
        let last = (slashes.last + 1)..<end
        let previous = (slashes.second + 1)..<slashes.last
        let third = slashes.third >= 0 ? (slashes.third + 1)..<slashes.second : start..<slashes.second
        let thirdIsBlobs = slashes.third >= 0 && ReferenceParser.equals(bytes, third, "blobs")

        let endpoint: RegistryEndpoint
        var repositoryEnd = slashes.second
        if last.isEmpty {
            guard ReferenceParser.equals(bytes, previous, "uploads"), thirdIsBlobs else { return .failure(unknown) }
            endpoint = .uploadStart
            repositoryEnd = slashes.third
        } else if ReferenceParser.equals(bytes, previous, "manifests") {
            if bytes[last].contains(ASCII.colon) {
                switch digest(bytes, last) {
                case .success(let digest): endpoint = .manifest(.digest(digest))
                case .failure(let failure): return .failure(failure)
                }
            } else if let problem = GrammarScanner.tagProblem(bytes, last) {
                return .failure(ParseFailure(code: .invalidTag, reason: problem))
            } else {
                endpoint = .manifest(.tag(string(bytes, last)))
            }
        } else if ReferenceParser.equals(bytes, previous, "blobs") {
            if ReferenceParser.equals(bytes, last, "uploads") {
                // `blobs/uploads` without the trailing slash: registries redirect it to the
                // upload route, and no digest is called "uploads".
                endpoint = .uploadStart
            } else {
                switch digest(bytes, last) {
                case .success(let digest): endpoint = .blob(digest)
                case .failure(let failure): return .failure(failure)
                }
            }
        } else if ReferenceParser.equals(bytes, previous, "referrers") {
            switch digest(bytes, last) {
            case .success(let digest): endpoint = .referrers(digest)
            case .failure(let failure): return .failure(failure)
            }
        } else if ReferenceParser.equals(bytes, previous, "tags"), ReferenceParser.equals(bytes, last, "list") {
            endpoint = .tagList
        } else if ReferenceParser.equals(bytes, previous, "uploads"), thirdIsBlobs {
            guard bytes[last].allSatisfy(isUploadIDByte) else {
                return .failure(
                    ParseFailure(
                        code: .invalidUploadID, reason: "an upload ID may only hold letters, digits, '-', '_', '.' and '='"))
            }
            endpoint = .upload(id: string(bytes, last))
            repositoryEnd = slashes.third
        } else {
            return .failure(unknown)
        }

        let repository = start..<repositoryEnd
        guard !repository.isEmpty else { return .failure(unknown) }
        if let problem = GrammarScanner.pathProblem(bytes, repository) {
            return .failure(ParseFailure(code: problem.code, reason: problem.reason))
        }
        guard repository.count <= ImageReference.maximumRepositoryLength else {
            return .failure(
                ParseFailure(
                    code: .nameTooLong,
                    reason: "the repository name is longer than \(ImageReference.maximumRepositoryLength) characters"))
        }
        return .success(.repository(name: string(bytes, repository), endpoint: endpoint))
    }

    private static func digest(_ bytes: Bytes, _ range: Range<Int>) -> Result<Digest, ParseFailure> {
        switch Digest.validate(bytes, range) {
        case .success(let colon):
            return .success(Digest(validated: string(bytes, range), colonOffset: colon))
        case .failure(let problem):
            return .failure(ParseFailure(code: .invalidDigest, reason: problem.text))
        }
    }

    static func string(_ bytes: Bytes, _ range: Range<Int>) -> String {
        String(decoding: UnsafeBufferPointer(rebasing: bytes[range]), as: UTF8.self)
    }

    private static func isUploadIDByte(_ byte: UInt8) -> Bool {
        ASCII.isAlphanumeric(byte) || byte == ASCII.dash || byte == ASCII.underscore
            || byte == ASCII.dot || byte == ASCII.equals
    }
}
