import Crypto
import Foundation

/// `sha256:<hex>` of some bytes.
public func sha256Digest(_ data: some DataProtocol) -> String {
    "sha256:" + SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
}

/// A small OCI image: a config blob, one layer blob and the manifest that names them.
public struct TestImage: Sendable {
    public let config: Data
    public let layer: Data
    public let manifest: Data
    public static let manifestMediaType = "application/vnd.oci.image.manifest.v1+json"

    /// An image whose layer has `layerSize` bytes; `annotationBytes` more make its manifest
    /// longer by an annotation of that many characters.
    public init(layerSize: Int = 1024, seed: UInt8 = 1, annotationBytes: Int = 0) {
        config = Data(#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"seed":\#(seed)}"#.utf8)
        layer = Data((0..<layerSize).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed)) })
        manifest = Data(
            """
            {"schemaVersion":2,"mediaType":"\(Self.manifestMediaType)",\
            "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"\(sha256Digest(config))","size":\(config.count)},\
            "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"\(sha256Digest(layer))","size":\(layer.count)}]\
            \(annotationBytes > 0 ? #","annotations":{"padding":"\#(String(repeating: "p", count: annotationBytes))"}"# : "")}
            """.utf8)
    }

    public var manifestDigest: String { sha256Digest(manifest) }
}

/// A file of `mebibytes` random bytes in `directory`, and its digest, both made by system tools
/// (`head`, `sha256sum`), independently of the code under test.
public func randomBlob(mebibytes: Int, in directory: URL) throws -> (file: URL, digest: String) {
    let file = directory.appendingPathComponent("blob")
    try runCommand("/bin/sh", ["-c", "head -c \(mebibytes)M /dev/urandom > '\(file.path)'"])
    let sum = try runCommand("/usr/bin/sha256sum", [file.path]).split(separator: " ").first.map(String.init) ?? ""
    return (file, "sha256:" + sum)
}
