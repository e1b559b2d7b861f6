import OCIReference

/// The query of a blob upload's start (`POST …/blobs/uploads/?mount=…&from=…`), read the way the
/// distribution registry reads it, so that the proxy authorises what the registry will do.
///
/// The registry (Go's `url.ParseQuery`) splits the query at `&`, decodes `+` and `%XX` in names
/// and values alike, takes the first of repeated names and skips pairs holding a `;` (which older
/// releases treated as a separator). Anything on which two readers could disagree is refused
/// here instead: a `;`, a malformed escape, a name that is not valid UTF-8, or `mount`, `from` or
/// `digest` given twice. What goes upstream is the query re-encoded from the decoded pairs, so
/// the registry reads exactly what was authorised.
struct UploadStartQuery: Equatable {
    /// The decoded pairs, in order.
    var pairs: [Pair]

    struct Pair: Equatable {
        var name: String
        var value: String
    }

    /// The parameters that decide what an upload start does: each may appear once.
    static let deciding: Set<String> = ["mount", "from", "digest"]

    /// Reads `raw`, the query as the client sent it (percent-encoded).
    init(parsing raw: Substring) throws(RegistryErrorResponse) {
        var pairs: [Pair] = []
        var seen: Set<String> = []
        for part in raw.split(separator: "&", omittingEmptySubsequences: true) {
            guard !part.contains(";") else {
                throw Self.ambiguous("a ';' in the query, which registries read differently")
            }
            let equals = part.firstIndex(of: "=")
            guard let name = Self.decode(part[..<(equals ?? part.endIndex)]),
                let value = Self.decode(equals.map { part[part.index(after: $0)...] } ?? "")
            else { throw Self.ambiguous("a malformed escape in the query") }
            if Self.deciding.contains(name) {
                guard seen.insert(name).inserted else { throw Self.ambiguous("'\(name)' given more than once") }
            }
            pairs.append(Pair(name: name, value: value))
        }
        self.pairs = pairs
    }

    /// The value of the first parameter named `name`, decoded.
    subscript(name: String) -> String? {
        get { pairs.first { $0.name == name }?.value }
        set {
            guard let index = pairs.firstIndex(where: { $0.name == name }) else { return }
            if let newValue { pairs[index].value = newValue } else { pairs.remove(at: index) }
        }
    }

    /// The query for the upstream: every pair, re-encoded.
    var encoded: String {
        pairs.map { Self.encode($0.name) + "=" + Self.encode($0.value) }.joined(separator: "&")
    }

    /// A `400` for a query the proxy will not guess about.
    static func ambiguous(_ what: String) -> RegistryErrorResponse {
        RegistryErrorResponse(.badRequest, "UNSUPPORTED", "the upload's query is ambiguous: \(what)")
    }

    /// `+` as a space and `%XX` as its byte, as a query component is decoded; `nil` for a `%`
    /// not followed by two hexadecimal digits, or bytes that are not UTF-8.
    static func decode(_ text: Substring) -> String? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count)
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            switch byte {
            case UInt8(ascii: "+"):
                bytes.append(UInt8(ascii: " "))
            case UInt8(ascii: "%"):
                guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else {
                    return nil
                }
                bytes.append(high << 4 | low)
            default:
                bytes.append(byte)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// Percent-encodes all but unreserved characters and the `/` and `:` of repository names
    /// and digests.
    static func encode(_ text: String) -> String {
        var output = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"), UInt8(ascii: "/"), UInt8(ascii: ":"):
                output.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                let digits = Array("0123456789ABCDEF".utf8)
                output += "%"
                output.unicodeScalars.append(Unicode.Scalar(digits[Int(byte >> 4)]))
                output.unicodeScalars.append(Unicode.Scalar(digits[Int(byte & 0xF)]))
            }
        }
        return output
    }
}
