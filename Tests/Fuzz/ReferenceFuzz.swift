// libFuzzer target for OCIReference: image references, digests, registry routes in both forms.
// Built with its sources by scripts/fuzz.sh; beyond not trapping, what parses must round-trip.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzReference(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    if let reference = try? ImageReference(parsing: text) {
        // The normalised form names the same image.
        guard let again = try? ImageReference(parsing: reference.normalized), again.normalized == reference.normalized
        else { fatalError("\(text) does not round-trip") }
        // So does the familiar form, but for Docker Hub repositories whose first element looks
        // like a host (`docker.io/a.b/app`): there, as in the reference implementation, the
        // familiar form names another registry.
        let first = reference.familiar.split(separator: "/").first ?? ""
        let looksLikeHost =
            reference.familiar.contains("/") && (first.contains(".") || first.contains(":") || first == "localhost")
        if !looksLikeHost {
            guard let familiar = try? ImageReference(parsing: reference.familiar), familiar.normalized == reference.normalized
            else { fatalError("\(text): the familiar form names another image") }
        }
    }
    if let digest = try? Digest(parsing: text) {
        guard "\(digest.algorithm):\(digest.encoded)" == digest.string, ["sha256", "sha384", "sha512"].contains(digest.algorithm)
        else { fatalError("\(text) parsed as a digest it is not") }
    }
    _ = try? RegistryRoute(path: text)
    if let split = try? ConnectorRoute(pathFormPath: text), let connector = split.connector {
        // A connector named in a path is a valid connector identifier.
        guard (try? ConnectorID(namespace: connector.namespace, name: connector.name)) == connector else {
            fatalError("\(text) named an invalid connector")
        }
    }
    return 0
}
