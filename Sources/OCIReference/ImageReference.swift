/// A fully qualified, normalised image reference: `registry/repository[:tag][@digest]`.
///
/// Parsing follows the grammar of the CNCF distribution `reference` package and Docker's
/// normalisation of Docker Hub names, so `ubuntu` reads as `docker.io/library/ubuntu` and
/// `index.docker.io/x/y` as `docker.io/x/y`. No default tag is added: a reference without a tag
/// has `tag == nil`.
///
/// ```swift
/// let reference = try ImageReference(parsing: "harbor.example.com/team/app:v1")
/// reference.registry    // "harbor.example.com"
/// reference.repository  // "team/app"
/// reference.tag         // "v1"
/// ```
///
/// The value keeps one string and the offsets of its parts, so parsing costs at most one
/// allocation (none when the input is already normalised) and the parts are cut out on demand.
public struct ImageReference: Hashable, Sendable, CustomStringConvertible {
    /// The normalised reference.
    public let string: String
    /// Offset of the `/` between registry and repository.
    let registryEnd: Int
    /// Offset just past the repository.
    let repositoryEnd: Int
    /// Offset just past the tag; equal to `repositoryEnd` when there is no tag.
    let tagEnd: Int

    init(string: String, registryEnd: Int, repositoryEnd: Int, tagEnd: Int) {
        self.string = string
        self.registryEnd = registryEnd
        self.repositoryEnd = repositoryEnd
        self.tagEnd = tagEnd
    }

    /// The maximum length of a repository name, counted after normalisation.
    public static let maximumRepositoryLength = 255

    /// The registry's name, such as `docker.io` or `harbor.example.com:8443`.
    ///
    /// This is the name people write in references, not necessarily the host to connect to: see
    /// ``registryEndpoint``.
    public var registry: String { slice(0, registryEnd) }

    /// The host (and port) that serves the registry's API: `registry-1.docker.io` for Docker Hub,
    /// the registry name itself otherwise.
    public var registryEndpoint: String { DockerHub.endpoint(forRegistry: registry) }

    /// The repository path within the registry, such as `library/ubuntu`.
    public var repository: String { slice(registryEnd + 1, repositoryEnd) }

    /// `registry/repository`, without tag or digest.
    public var name: String { slice(0, repositoryEnd) }

    /// The tag, if the reference has one.
    public var tag: String? {
        tagEnd > repositoryEnd ? slice(repositoryEnd + 1, tagEnd) : nil
    }

    /// The digest, if the reference has one.
    public var digest: Digest? {
        let count = string.utf8.count
        guard tagEnd < count else { return nil }
        let digest = slice(tagEnd + 1, count)
        let colon = digest.utf8.firstIndex(of: ASCII.colon)!
        return Digest(validated: digest, colonOffset: digest.utf8.distance(from: digest.utf8.startIndex, to: colon))
    }

    /// The fully qualified reference, the same as ``string``.
    public var normalized: String { string }

    /// The short form people type: `ubuntu:22.04` for `docker.io/library/ubuntu:22.04`,
    /// `user/app` for `docker.io/user/app`; other registries keep their full name.
    public var familiar: String {
        guard registry == DockerHub.registryName else { return string }
        var start = registryEnd + 1
        let repository = self.repository
        let official = DockerHub.officialNamespace + "/"
        if repository.hasPrefix(official), !repository.utf8.dropFirst(official.utf8.count).contains(ASCII.slash) {
            start += official.utf8.count
        }
        return slice(start, string.utf8.count)
    }

    /// The same reference without its tag and digest.
    public var withoutTagOrDigest: ImageReference {
        ImageReference(string: name, registryEnd: registryEnd, repositoryEnd: repositoryEnd, tagEnd: repositoryEnd)
    }

    /// Everything after the repository: `:tag`, `@digest`, both, or nothing.
    var tagAndDigestSuffix: Substring {
        let utf8 = string.utf8
        return Substring(utf8[utf8.index(utf8.startIndex, offsetBy: repositoryEnd)...])
    }

    public var description: String { string }

    private func slice(_ start: Int, _ end: Int) -> String {
        let utf8 = string.utf8
        let lower = utf8.index(utf8.startIndex, offsetBy: start)
        let upper = utf8.index(lower, offsetBy: end - start)
        return String(Substring(utf8[lower..<upper]))
    }
}
