import OCIReference
import Testing

private let sha256 = "sha256:" + String(repeating: "4f", count: 32)
private let sha512 = "sha512:" + String(repeating: "a1", count: 64)

struct ValidReference: CustomTestStringConvertible, Sendable {
    var input: String
    var registry: String
    var repository: String
    var tag: String?
    var digest: String?
    var normalized: String
    var familiar: String

    var testDescription: String { input }
}

@Suite("Parsing image references")
struct ImageReferenceTests {
    static let valid: [ValidReference] = [
        // Docker Hub short names and their normalisation.
        .init(
            input: "ubuntu", registry: "docker.io", repository: "library/ubuntu", tag: nil, digest: nil,
            normalized: "docker.io/library/ubuntu", familiar: "ubuntu"),
        .init(
            input: "ubuntu:22.04", registry: "docker.io", repository: "library/ubuntu", tag: "22.04", digest: nil,
            normalized: "docker.io/library/ubuntu:22.04", familiar: "ubuntu:22.04"),
        .init(
            input: "library/busybox:1.36", registry: "docker.io", repository: "library/busybox", tag: "1.36", digest: nil,
            normalized: "docker.io/library/busybox:1.36", familiar: "busybox:1.36"),
        .init(
            input: "docker.io/ubuntu", registry: "docker.io", repository: "library/ubuntu", tag: nil, digest: nil,
            normalized: "docker.io/library/ubuntu", familiar: "ubuntu"),
        .init(
            input: "index.docker.io/bitnami/redis:7.2", registry: "docker.io", repository: "bitnami/redis", tag: "7.2",
            digest: nil, normalized: "docker.io/bitnami/redis:7.2", familiar: "bitnami/redis:7.2"),
        .init(
            input: "index.docker.io/nginx", registry: "docker.io", repository: "library/nginx", tag: nil, digest: nil,
            normalized: "docker.io/library/nginx", familiar: "nginx"),
        .init(
            input: "bitnami/redis", registry: "docker.io", repository: "bitnami/redis", tag: nil, digest: nil,
            normalized: "docker.io/bitnami/redis", familiar: "bitnami/redis"),
        .init(
            input: "docker.io/library/a/b", registry: "docker.io", repository: "library/a/b", tag: nil, digest: nil,
            normalized: "docker.io/library/a/b", familiar: "library/a/b"),
        // A bare name with a colon is a name and a tag, as Docker reads it.
        .init(
            input: "localhost:5000", registry: "docker.io", repository: "library/localhost", tag: "5000", digest: nil,
            normalized: "docker.io/library/localhost:5000", familiar: "localhost:5000"),
        // Registries with domains, ports, IPs.
        .init(
            input: "harbor.example.com/team/app:v1", registry: "harbor.example.com", repository: "team/app", tag: "v1",
            digest: nil, normalized: "harbor.example.com/team/app:v1", familiar: "harbor.example.com/team/app:v1"),
        .init(
            input: "registry.k8s.io/pause:3.9", registry: "registry.k8s.io", repository: "pause", tag: "3.9", digest: nil,
            normalized: "registry.k8s.io/pause:3.9", familiar: "registry.k8s.io/pause:3.9"),
        .init(
            input: "gcr.io/distroless/static-debian12:nonroot", registry: "gcr.io", repository: "distroless/static-debian12",
            tag: "nonroot", digest: nil, normalized: "gcr.io/distroless/static-debian12:nonroot",
            familiar: "gcr.io/distroless/static-debian12:nonroot"),
        .init(
            input: "123456789012.dkr.ecr.us-east-1.amazonaws.com/my-app:latest",
            registry: "123456789012.dkr.ecr.us-east-1.amazonaws.com", repository: "my-app", tag: "latest", digest: nil,
            normalized: "123456789012.dkr.ecr.us-east-1.amazonaws.com/my-app:latest",
            familiar: "123456789012.dkr.ecr.us-east-1.amazonaws.com/my-app:latest"),
        .init(
            input: "localhost/app", registry: "localhost", repository: "app", tag: nil, digest: nil,
            normalized: "localhost/app", familiar: "localhost/app"),
        .init(
            input: "localhost:5000/a/b:c", registry: "localhost:5000", repository: "a/b", tag: "c", digest: nil,
            normalized: "localhost:5000/a/b:c", familiar: "localhost:5000/a/b:c"),
        .init(
            input: "192.168.1.10:5000/app", registry: "192.168.1.10:5000", repository: "app", tag: nil, digest: nil,
            normalized: "192.168.1.10:5000/app", familiar: "192.168.1.10:5000/app"),
        .init(
            input: "[2001:db8::1]:5000/app:v1", registry: "[2001:db8::1]:5000", repository: "app", tag: "v1", digest: nil,
            normalized: "[2001:db8::1]:5000/app:v1", familiar: "[2001:db8::1]:5000/app:v1"),
        .init(
            input: "[::1]/app", registry: "[::1]", repository: "app", tag: nil, digest: nil,
            normalized: "[::1]/app", familiar: "[::1]/app"),
        // An uppercase first element is a registry host, never a repository.
        .init(
            input: "Registry.Example.com/app", registry: "Registry.Example.com", repository: "app", tag: nil, digest: nil,
            normalized: "Registry.Example.com/app", familiar: "Registry.Example.com/app"),
        .init(
            input: "Foo/bar", registry: "Foo", repository: "bar", tag: nil, digest: nil,
            normalized: "Foo/bar", familiar: "Foo/bar"),
        // Separators inside path components.
        .init(
            input: "example.com/a.b_c__d---e/f", registry: "example.com", repository: "a.b_c__d---e/f", tag: nil,
            digest: nil, normalized: "example.com/a.b_c__d---e/f", familiar: "example.com/a.b_c__d---e/f"),
        // Tags.
        .init(
            input: "example.com/app:_under.score-dash", registry: "example.com", repository: "app",
            tag: "_under.score-dash", digest: nil, normalized: "example.com/app:_under.score-dash",
            familiar: "example.com/app:_under.score-dash"),
        .init(
            input: "example.com/app:V1.2.3-RC1", registry: "example.com", repository: "app", tag: "V1.2.3-RC1",
            digest: nil, normalized: "example.com/app:V1.2.3-RC1", familiar: "example.com/app:V1.2.3-RC1"),
        // Digests, and a tag with a digest.
        .init(
            input: "ghcr.io/org/repo@\(sha256)", registry: "ghcr.io", repository: "org/repo", tag: nil, digest: sha256,
            normalized: "ghcr.io/org/repo@\(sha256)", familiar: "ghcr.io/org/repo@\(sha256)"),
        .init(
            input: "busybox:1.36@\(sha256)", registry: "docker.io", repository: "library/busybox", tag: "1.36",
            digest: sha256, normalized: "docker.io/library/busybox:1.36@\(sha256)", familiar: "busybox:1.36@\(sha256)"),
        .init(
            input: "localhost:5000/app@\(sha512)", registry: "localhost:5000", repository: "app", tag: nil,
            digest: sha512, normalized: "localhost:5000/app@\(sha512)", familiar: "localhost:5000/app@\(sha512)"),
        .init(
            input: "localhost:5000/app@sha384:\(String(repeating: "c", count: 96))", registry: "localhost:5000",
            repository: "app", tag: nil, digest: "sha384:\(String(repeating: "c", count: 96))",
            normalized: "localhost:5000/app@sha384:\(String(repeating: "c", count: 96))",
            familiar: "localhost:5000/app@sha384:\(String(repeating: "c", count: 96))"),
    ]

    @Test(arguments: valid)
    func parsesAndNormalises(_ vector: ValidReference) throws {
        let reference = try ImageReference(parsing: vector.input)
        #expect(reference.registry == vector.registry)
        #expect(reference.repository == vector.repository)
        #expect(reference.tag == vector.tag)
        #expect(reference.digest?.string == vector.digest)
        #expect(reference.normalized == vector.normalized)
        #expect(reference.familiar == vector.familiar)
        #expect(reference.name == "\(vector.registry)/\(vector.repository)")
        // Normalising is idempotent, and the familiar form reads back to the same reference.
        #expect(try ImageReference(parsing: reference.normalized) == reference)
        #expect(try ImageReference(parsing: reference.familiar) == reference)
    }

    static let invalid: [(String, ReferenceError.Code)] = [
        ("", .empty),
        (":tag", .invalidFormat),
        ("@\(sha256)", .invalidFormat),
        ("/app", .invalidFormat),
        ("app/", .invalidFormat),
        ("foo//bar", .invalidFormat),
        ("-foo", .invalidFormat),
        ("foo-", .invalidFormat),
        ("foo.-bar", .invalidFormat),
        ("foo_.bar", .invalidFormat),
        ("foo___bar", .invalidFormat),
        ("foo..bar", .invalidFormat),
        ("example.com/a b", .invalidFormat),
        ("example.com/ünicode", .invalidFormat),
        ("foo/Bar", .uppercaseRepository),
        ("example.com/Team/app", .uppercaseRepository),
        ("UPPER", .uppercaseRepository),
        ("exa_mple.com/app", .invalidDomain),
        ("-example.com/app", .invalidDomain),
        ("example-.com/app", .invalidDomain),
        ("example..com/app", .invalidDomain),
        ("example.com:/app", .invalidDomain),
        ("example.com:port/app", .invalidDomain),
        ("[::1/app", .invalidDomain),
        ("[]:5000/app", .invalidDomain),
        ("[fe80::1%eth0]/app", .invalidDomain),
        ("app:", .invalidTag),
        ("app:-dash", .invalidTag),
        ("app:.dot", .invalidTag),
        ("app:a+b", .invalidTag),
        ("example.com/app:v1:v2", .invalidFormat),
        ("app@", .invalidDigest),
        ("app@sha256:abc", .invalidDigest),
        ("app@sha256:\(String(repeating: "A", count: 64))", .invalidDigest),
        ("app@sha256:\(String(repeating: "a", count: 65))", .invalidDigest),
        ("app@sha512:\(String(repeating: "a", count: 64))", .invalidDigest),
        ("app@md5:\(String(repeating: "a", count: 31))", .invalidDigest),
        // Only the algorithms the reference implementation can verify (go-digest's sha256,
        // sha384, sha512), spelt in lowercase: the generic grammar alone is not enough.
        ("app@md5:\(String(repeating: "a", count: 32))", .invalidDigest),
        ("app@sha1:\(String(repeating: "a", count: 40))", .invalidDigest),
        ("app@sha256+b64u:\(String(repeating: "0A", count: 16))", .invalidDigest),
        ("example.com/app@sha256+b64u.v2:\(String(repeating: "0A", count: 16))", .invalidDigest),
        ("app@SHA256:\(String(repeating: "a", count: 64))", .invalidDigest),
        ("app@blake3:\(String(repeating: "a", count: 64))", .invalidDigest),
        ("app@1sha:\(String(repeating: "a", count: 64))", .invalidDigest),
        ("app@sha256", .invalidDigest),
        ("app@\(sha256)@\(sha256)", .invalidDigest),
        (String(repeating: "ab", count: 32), .ambiguousHexName),
    ]

    @Test(arguments: invalid)
    func rejectsWithAPreciseCode(_ input: String, _ code: ReferenceError.Code) {
        #expect {
            _ = try ImageReference(parsing: input)
        } throws: { error in
            let error = error as! ReferenceError
            return error.code == code && error.input == input && !error.reason.isEmpty
        }
    }

    @Test func repositoryLengthIsCountedAfterNormalisation() throws {
        let longest = String(repeating: "a", count: 255)
        #expect(try ImageReference(parsing: "example.com/\(longest)").repository.count == 255)
        #expect(throws: ReferenceError.self) { try ImageReference(parsing: "example.com/\(longest)a") }

        // "library/" counts: 247 + 8 = 255 fits, 248 + 8 does not.
        let official = String(repeating: "b", count: 247)
        #expect(try ImageReference(parsing: official).repository == "library/\(official)")
        do {
            _ = try ImageReference(parsing: official + "b")
            Issue.record("a 256-character normalised repository was accepted")
        } catch {
            #expect(error.code == .nameTooLong)
        }

        // Multi-element names at the limit; the registry host does not count.
        let elements = Array(repeating: String(repeating: "c", count: 63), count: 4).joined(separator: "/")
        #expect(elements.count == 255)
        #expect(try ImageReference(parsing: "a-very-long-registry-name.example.com:5000/\(elements)").repository == elements)
    }

    @Test func tagLengthLimit() throws {
        let longest = String(repeating: "t", count: 128)
        #expect(try ImageReference(parsing: "app:\(longest)").tag == longest)
        do {
            _ = try ImageReference(parsing: "app:\(longest)t")
            Issue.record("a 129-character tag was accepted")
        } catch {
            #expect(error.code == .invalidTag)
        }
    }

    @Test func digestParts() throws {
        let digest = try #require(try ImageReference(parsing: "ghcr.io/org/repo@\(sha256)").digest)
        #expect(digest.algorithm == "sha256")
        #expect(digest.encoded == Substring(String(repeating: "4f", count: 32)))
        #expect(try Digest(parsing: sha512).algorithm == "sha512")
        #expect(try Digest(parsing: "sha384:" + String(repeating: "0", count: 96)).encoded.count == 96)
    }

    @Test func registryEndpointIsSeparateFromTheName() throws {
        let hub = try ImageReference(parsing: "ubuntu")
        #expect(hub.registry == "docker.io")
        #expect(hub.registryEndpoint == "registry-1.docker.io")
        #expect(try ImageReference(parsing: "quay.io/a/b").registryEndpoint == "quay.io")
    }

    @Test func withoutTagOrDigest() throws {
        let reference = try ImageReference(parsing: "busybox:1.36@\(sha256)").withoutTagOrDigest
        #expect(reference.string == "docker.io/library/busybox")
        #expect(reference.tag == nil && reference.digest == nil)
    }

    @Test func errorDescriptionNamesTheInput() {
        do {
            _ = try ImageReference(parsing: "Harbor/Team/App")
            Issue.record("accepted")
        } catch {
            #expect(error.code == .uppercaseRepository)
            #expect(error.description == "repository name must be lowercase: \"Harbor/Team/App\"")
        }
    }
}
