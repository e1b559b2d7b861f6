import Testing

@testable import OCIConnectorProxy

/// Where a redirected blob read goes: the `Location`s registries send, taken apart for a
/// connection of the proxy's own.
@Suite("Redirect locations for object storage")
struct StorageLocationTests {
    struct Case: Sendable, CustomStringConvertible {
        let location: String
        let secure: Bool, authority: String, host: String, port: Int, target: String
        var description: String { location }
    }

    static let valid: [Case] = [
        // S3, as Docker Hub's and ECR's storage answers (signature shortened).
        .init(
            location:
                "https://prod-registry-k8s-io.s3.dualstack.us-east-2.amazonaws.com/containers/images/sha256:0123?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=ab12",
            secure: true, authority: "prod-registry-k8s-io.s3.dualstack.us-east-2.amazonaws.com",
            host: "prod-registry-k8s-io.s3.dualstack.us-east-2.amazonaws.com", port: 443,
            target: "/containers/images/sha256:0123?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=ab12"),
        // GHCR's CDN.
        .init(
            location: "https://pkg-containers.githubusercontent.com/ghcr1/blobs/sha256:ab?se=2026-11-30T01%3A00Z&sig=x%2By",
            secure: true, authority: "pkg-containers.githubusercontent.com", host: "pkg-containers.githubusercontent.com",
            port: 443, target: "/ghcr1/blobs/sha256:ab?se=2026-11-30T01%3A00Z&sig=x%2By"),
        .init(
            location: "http://localhost:5000/storage/blob?sig=1", secure: false, authority: "localhost:5000",
            host: "localhost", port: 5000, target: "/storage/blob?sig=1"),
        .init(
            location: "HTTP://[::1]:8080/b#fragment", secure: false, authority: "[::1]:8080", host: "::1", port: 8080,
            target: "/b"),
        .init(
            location: "https://[2001:db8::1]/x", secure: true, authority: "[2001:db8::1]", host: "2001:db8::1", port: 443,
            target: "/x"),
        .init(
            location: "https://storage.example?sig=1", secure: true, authority: "storage.example", host: "storage.example",
            port: 443, target: "/?sig=1"),
        // An empty port is the scheme's default; the Host header keeps the spelling.
        .init(
            location: "https://bucket.example:/x", secure: true, authority: "bucket.example:", host: "bucket.example",
            port: 443, target: "/x"),
    ]

    @Test(arguments: valid) func takesApartWhatRegistriesSend(_ expected: Case) throws {
        let location = try #require(StorageLocation(expected.location))
        #expect(location.isSecure == expected.secure)
        #expect(location.authority == expected.authority)
        #expect(location.host == expected.host)
        #expect(location.port == expected.port)
        #expect(location.pathAndQuery == expected.target)
        #expect(location.origin == "\(expected.secure ? "https" : "http")://\(expected.authority)")
    }

    @Test(arguments: [
        "/storage/blob?sig=1",  // relative: the upstream's own origin, for the responder
        "ftp://storage.example/blob",
        "https://user:secret@storage.example/blob",  // user information would be sent as a Host
        "https://storage.example:99999/blob",
        "https://storage.example:x/blob",
        "https://[::1/blob",
        "https:///blob",
        "https://storage.example:+443/blob",
        "https://::1/blob",  // IPv6 without brackets
        "https://b\u{FC}cket.example/blob",
        "https://storage.example/a b",  // the responder's client encodes what this does not
        "http+unix://%2Fvar%2Frun%2Fdocker.sock/info",
        "",
    ])
    func refusesWhatItCannotFetch(_ location: String) {
        #expect(StorageLocation(location) == nil)
    }
}
