/// A content digest, `algorithm:encoded`, such as `sha256:` followed by 64 lowercase hex digits.
///
/// Only the algorithms the reference implementation can verify are accepted, as it accepts
/// them: `sha256` (64), `sha384` (96) and `sha512` (128 lowercase hex digits). Other names
/// that fit the generic grammar (`sha1`, `md5`, `sha256+b64u`, `SHA256`) are refused: no
/// registry could check content against them.
public struct Digest: Hashable, Sendable, CustomStringConvertible {
    /// The whole digest, `algorithm:encoded`.
    public let string: String
    private let colonOffset: Int

    /// Parses and validates a digest.
    public init(parsing string: String) throws(ReferenceError) {
        var contiguous = string
        contiguous.makeContiguousUTF8()
        let outcome = contiguous.utf8.withContiguousStorageIfAvailable { bytes in
            Digest.validate(bytes, 0..<bytes.count)
        }
        switch outcome! {
        case .success(let colon):
            self.string = contiguous
            self.colonOffset = colon
        case .failure(let reason):
            throw ReferenceError(.invalidDigest, input: string, reason: reason.text)
        }
    }

    init(validated string: String, colonOffset: Int) {
        self.string = string
        self.colonOffset = colonOffset
    }

    /// The algorithm, such as `sha256`.
    public var algorithm: Substring {
        let utf8 = string.utf8
        return Substring(utf8[..<utf8.index(utf8.startIndex, offsetBy: colonOffset)])
    }

    /// The encoded hash after the colon.
    public var encoded: Substring {
        let utf8 = string.utf8
        return Substring(utf8[utf8.index(utf8.startIndex, offsetBy: colonOffset + 1)...])
    }

    public var description: String { string }

    struct Problem: Error { var text: String }

    /// Checks `bytes[range]` against the digest grammar; on success returns the colon's offset
    /// relative to `range.lowerBound`.
    static func validate(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> Result<Int, Problem> {
        guard !range.isEmpty else { return .failure(Problem(text: "the digest is empty")) }
        var index = range.lowerBound
        // algorithm := component [separator component]*, component := [A-Za-z][A-Za-z0-9]*
        while true {
            guard index < range.upperBound, ASCII.isLetter(bytes[index]) else {
                return .failure(Problem(text: "a digest algorithm must be letters and digits, starting with a letter"))
            }
            index += 1
            while index < range.upperBound, ASCII.isAlphanumeric(bytes[index]) { index += 1 }
            guard index < range.upperBound else {
                return .failure(Problem(text: "a digest must be algorithm:encoded"))
            }
            let byte = bytes[index]
            if byte == ASCII.colon { break }
            guard byte == ASCII.plus || byte == ASCII.dot || byte == ASCII.underscore || byte == ASCII.dash else {
                return .failure(Problem(text: "a digest algorithm may not contain \(ASCII.show(byte))"))
            }
            index += 1
        }
        let colon = index
        let encoded = (colon + 1)..<range.upperBound
        let algorithm = UnsafeBufferPointer(rebasing: bytes[range.lowerBound..<colon])
        guard let length = registeredLength(algorithm) else {
            return .failure(
                Problem(
                    text:
                        "digest algorithm \(String(decoding: algorithm, as: UTF8.self)) is not supported; use sha256, sha384 or sha512"
                ))
        }
        guard encoded.count == length, encoded.allSatisfy({ ASCII.isLowerHex(bytes[$0]) }) else {
            return .failure(
                Problem(text: "a \(String(decoding: algorithm, as: UTF8.self)) digest must be \(length) lowercase hex digits"))
        }
        return .success(colon - range.lowerBound)
    }

    private static func registeredLength(_ algorithm: UnsafeBufferPointer<UInt8>) -> Int? {
        guard algorithm.count == 6,
            algorithm[0] == UInt8(ascii: "s"), algorithm[1] == UInt8(ascii: "h"), algorithm[2] == UInt8(ascii: "a")
        else { return nil }
        switch (algorithm[3], algorithm[4], algorithm[5]) {
        case (UInt8(ascii: "2"), UInt8(ascii: "5"), UInt8(ascii: "6")): return 64
        case (UInt8(ascii: "3"), UInt8(ascii: "8"), UInt8(ascii: "4")): return 96
        case (UInt8(ascii: "5"), UInt8(ascii: "1"), UInt8(ascii: "2")): return 128
        default: return nil
        }
    }
}
