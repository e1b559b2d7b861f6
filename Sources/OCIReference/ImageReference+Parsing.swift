extension ImageReference {
    /// Parses a reference the way Docker and containerd read one, normalising Docker Hub names.
    ///
    /// - Throws: ``ReferenceError`` saying which part is wrong: ``ReferenceError/Code/empty``,
    ///   ``ReferenceError/Code/invalidFormat``, ``ReferenceError/Code/invalidDomain``,
    ///   ``ReferenceError/Code/uppercaseRepository``, ``ReferenceError/Code/nameTooLong``,
    ///   ``ReferenceError/Code/invalidTag``, ``ReferenceError/Code/invalidDigest`` or
    ///   ``ReferenceError/Code/ambiguousHexName``.
    public init(parsing input: String) throws(ReferenceError) {
        var contiguous = input
        contiguous.makeContiguousUTF8()
        let outcome = contiguous.utf8.withContiguousStorageIfAvailable { bytes in
            ReferenceParser.parse(bytes, original: contiguous)
        }
        switch outcome! {
        case .success(let reference):
            self = reference
        case .failure(let failure):
            throw ReferenceError(failure.code, input: input, reason: failure.reason)
        }
    }
}

/// A parse failure before the input string is attached to it.
struct ParseFailure: Error {
    var code: ReferenceError.Code
    var reason: String
}

enum ReferenceParser {
    typealias Bytes = UnsafeBufferPointer<UInt8>

    static func parse(_ bytes: Bytes, original: String) -> Result<ImageReference, ParseFailure> {
        let count = bytes.count
        guard count > 0 else { return .failure(ParseFailure(code: .empty, reason: "the reference is empty")) }
        if count == 64, bytes.allSatisfy(ASCII.isLowerHex) {
            return .failure(
                ParseFailure(
                    code: .ambiguousHexName,
                    reason: "a 64-character hexadecimal name reads as an image ID; it cannot be a repository"))
        }

        // The digest follows the first "@".
        var nameAndTagEnd = count
        if let at = bytes.firstIndex(of: ASCII.at) {
            nameAndTagEnd = at
            if case .failure(let problem) = Digest.validate(bytes, (at + 1)..<count) {
                return .failure(ParseFailure(code: .invalidDigest, reason: problem.text))
            }
        }

        // The tag follows the last ":" that comes after the last "/"; earlier colons are a port.
        var firstSlash = -1
        var lastSlash = -1
        var lastColon = -1
        for index in 0..<nameAndTagEnd {
            switch bytes[index] {
            case ASCII.slash:
                if firstSlash < 0 { firstSlash = index }
                lastSlash = index
            case ASCII.colon:
                lastColon = index
            default:
                break
            }
        }
        var nameEnd = nameAndTagEnd
        if lastColon > lastSlash {
            nameEnd = lastColon
            if let problem = GrammarScanner.tagProblem(bytes, (lastColon + 1)..<nameAndTagEnd) {
                return .failure(ParseFailure(code: .invalidTag, reason: problem))
            }
        }
        guard nameEnd > 0 else {
            return .failure(ParseFailure(code: .invalidFormat, reason: "the reference has no repository name"))
        }

        // Docker's rule for whether the first element is a registry host.
        var domainEnd = -1
        if firstSlash >= 0, firstSlash < nameEnd, looksLikeDomain(bytes, 0..<firstSlash) {
            domainEnd = firstSlash
            if let problem = GrammarScanner.domainProblem(bytes, 0..<domainEnd) {
                return .failure(ParseFailure(code: .invalidDomain, reason: problem))
            }
        }
        let pathStart = domainEnd + 1
        if let problem = GrammarScanner.pathProblem(bytes, pathStart..<nameEnd) {
            return .failure(ParseFailure(code: problem.code, reason: problem.reason))
        }

        // Normalise Docker Hub: a missing or legacy registry name becomes docker.io, and a
        // single-element repository there becomes library/NAME.
        let onDockerHub: Bool
        let rewriteRegistry: Bool
        if domainEnd < 0 {
            onDockerHub = true
            rewriteRegistry = true
        } else if equals(bytes, 0..<domainEnd, DockerHub.legacyRegistryName) {
            onDockerHub = true
            rewriteRegistry = true
        } else {
            onDockerHub = equals(bytes, 0..<domainEnd, DockerHub.registryName)
            rewriteRegistry = false
        }
        let needsLibrary = onDockerHub && (lastSlash < pathStart)
        let repositoryLength = nameEnd - pathStart + (needsLibrary ? DockerHub.officialNamespace.utf8.count + 1 : 0)
        guard repositoryLength <= ImageReference.maximumRepositoryLength else {
            return .failure(
                ParseFailure(
                    code: .nameTooLong,
                    reason:
                        "the repository name is \(repositoryLength) characters long; at most \(ImageReference.maximumRepositoryLength) are allowed"
                ))
        }

        guard rewriteRegistry || needsLibrary else {
            let tagEnd = nameAndTagEnd
            return .success(ImageReference(string: original, registryEnd: domainEnd, repositoryEnd: nameEnd, tagEnd: tagEnd))
        }
        let registry = DockerHub.registryName.utf8
        let library = DockerHub.officialNamespace.utf8
        let prefixLength = registry.count + 1 + (needsLibrary ? library.count + 1 : 0)
        let rest = UnsafeBufferPointer(rebasing: bytes[pathStart...])
        let normalized = String(unsafeUninitializedCapacity: prefixLength + rest.count) { target in
            var offset = target.initialize(fromContentsOf: registry)
            target[offset] = ASCII.slash
            offset += 1
            if needsLibrary {
                offset = target[offset...].initialize(fromContentsOf: library)
                target[offset] = ASCII.slash
                offset += 1
            }
            return target[offset...].initialize(fromContentsOf: rest)
        }
        let shift = prefixLength - pathStart
        return .success(
            ImageReference(
                string: normalized,
                registryEnd: registry.count,
                repositoryEnd: nameEnd + shift,
                tagEnd: nameAndTagEnd + shift))
    }

    /// The first element names a registry when it has a "." or ":", is `localhost`, or has an
    /// uppercase letter (which no repository may have).
    private static func looksLikeDomain(_ bytes: Bytes, _ range: Range<Int>) -> Bool {
        for index in range {
            let byte = bytes[index]
            if byte == ASCII.dot || byte == ASCII.colon || ASCII.isUpper(byte) { return true }
        }
        return equals(bytes, range, "localhost")
    }

    static func equals(_ bytes: Bytes, _ range: Range<Int>, _ literal: String) -> Bool {
        guard range.count == literal.utf8.count else { return false }
        return zip(range, literal.utf8).allSatisfy { bytes[$0] == $1 }
    }
}
