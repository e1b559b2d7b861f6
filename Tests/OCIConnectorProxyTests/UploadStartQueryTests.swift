import OCIProxyToken
import OCIReference
import Testing

@testable import OCIConnectorProxy

/// The query of an upload start, read as the distribution registry (Go's `url.ParseQuery`)
/// reads it, and the mount source authorised like a pull of it.
@Suite("Upload start queries")
struct UploadStartQueryTests {
    static let digest = "sha256:" + String(repeating: "ab", count: 32)

    @Test(arguments: [
        // (raw query, decoded pairs)
        ("mount=\(digest)&from=team/app", [("mount", digest), ("from", "team/app")]),
        ("from=team%2Fapp", [("from", "team/app")]),
        ("%66rom=team/app", [("from", "team/app")]),
        ("%66%72%6F%6D=a", [("from", "a")]),
        ("digest=sha256%3Aab&x=a+b", [("digest", "sha256:ab"), ("x", "a b")]),
        ("&&a=&b", [("a", ""), ("b", "")]),
        ("", []),
    ])
    func decodesNamesAndValuesAsTheRegistryDoes(_ raw: String, _ expected: [(String, String)]) throws {
        let query = try UploadStartQuery(parsing: raw[...])
        #expect(query.pairs.map(\.name) == expected.map(\.0))
        #expect(query.pairs.map(\.value) == expected.map(\.1))
    }

    @Test(arguments: [
        "mount=a;from=secret/vault",  // Older registries split here, newer ones skip the pair.
        "from=a&from=b",
        "mount=a&%6dount=b",
        "digest=a&digest=b",
        "from=%zz",
        "from=%2",
        "%ff=x",  // Not UTF-8.
    ])
    func refusesWhatTwoReadersCouldReadDifferently(_ raw: String) {
        #expect(throws: RegistryErrorResponse.self) { try UploadStartQuery(parsing: raw[...]) }
    }

    @Test func reEncodesWhatItDecoded() throws {
        let query = try UploadStartQuery(parsing: "%66rom=team%2Fapp&mount=sha256%3Aab&note=a+b%26c")
        #expect(query.encoded == "from=team/app&mount=sha256:ab&note=a%20b%26c")
        #expect(try UploadStartQuery(parsing: query.encoded[...]) == query)
    }

    static let prefix = "namespaces/team-a/connectors/up"
    static let connector = try! ConnectorID(namespace: "team-a", name: "up")

    static func claims(_ repositories: [String]?, actions: [String] = ["pull", "push"]) -> ClientGrant {
        ClientGrant(
            claims: ProxyTokenClaims(
                subject: "ci", connectors: ["team-a/up"], actions: actions, repositories: repositories, lifetime: 600))
    }

    @Test(
        arguments: [
            // (query, token's repositories, the mount source sent upstream, or nil for a refusal)
            ("mount=\(digest)&from=\(prefix)/team/app", ["team/*"], "team/app"),
            ("mount=\(digest)&from=\(prefix)%2Fteam%2Fapp", ["team/*"], "team/app"),
            ("mount=\(digest)&from=\(prefix)/secret/vault", ["team/*"], nil),
            ("mount=\(digest)&from=namespaces%2Fteam-a%2Fconnectors%2Fup%2Fsecret%2Fvault", ["team/*"], nil),
            ("mount=\(digest)&%66rom=secret/vault", ["team/*"], nil),
            ("mount=\(digest)&from=namespaces/team-a/connectors/other/team/app", nil, nil),
            ("mount=\(digest)&from=\(prefix)/Team/App", nil, nil),
            ("mount=\(digest)&from=\(prefix)/anything", nil, "anything"),
        ] as [(String, [String]?, String?)])
    func aMountSourceMustBeAPullableRepositoryOfTheConnector(_ query: String, _ repositories: [String]?, _ source: String?) {
        let result = try? ConnectorProxy.uploadStart(
            query: query, contentType: nil, prefix: Self.prefix, connector: Self.connector, claims: Self.claims(repositories))
        #expect(result?.mountFrom == source)
        if let source { #expect(result?.query == "mount=\(Self.digest)&from=\(source)") }
    }

    @Test func aPushOnlyTokenCannotMountFromAnywhere() {
        #expect(throws: RegistryErrorResponse.self) {
            try ConnectorProxy.uploadStart(
                query: "mount=x&from=\(Self.prefix)/team/app", contentType: nil, prefix: Self.prefix,
                connector: Self.connector, claims: Self.claims(nil, actions: ["push"]))
        }
    }

    @Test(arguments: [
        "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "Application/X-WWW-Form-Urlencoded",
    ])
    func aFormBodyIsRefused(_ contentType: String) {
        #expect(throws: RegistryErrorResponse.self) {
            try ConnectorProxy.uploadStart(
                query: nil, contentType: contentType, prefix: Self.prefix, connector: Self.connector,
                claims: Self.claims(nil))
        }
    }
}
