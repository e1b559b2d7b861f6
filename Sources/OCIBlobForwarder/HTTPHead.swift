/// The parts of an HTTP/1.1 message head, found in its bytes without copying them.
///
/// A relay that only passes a head on, filtering a few header lines, need not turn every name
/// and value into a `String`: for a manifest `HEAD` that was most of what NIO's HTTP/1 decoder
/// and encoder cost on each of the two connections (Documentation/Performance.md). The rules are
/// stricter than RFC 9112 allows a recipient to be: a head with anything unusual in it (a bare
/// LF, a folded line, a control or non-ASCII byte, a space before a colon) is not scanned, so
/// that its reader can hand the bytes to a full HTTP/1 parser, which accepts or rejects it as
/// it always has.
package struct HTTPHead: Sendable {
    /// One header line: byte offsets into the head.
    package struct Field: Sendable, Equatable {
        /// The line, from the name's first byte to just past its CRLF.
        package let line: Range<Int>
        package let name: Range<Int>
        /// The value without the whitespace around it.
        package let value: Range<Int>
    }

    /// The first line without its CRLF: a request line or a status line.
    package let startLine: Range<Int>
    package let fields: [Field]
    /// The head's length, its blank line included.
    package let length: Int

    /// The longest head scanned; a longer one is for a full parser (and its limits).
    package static let maximumLength = 8 * 1024

    /// What scanning the start of a buffer found.
    package enum Scan: Sendable {
        /// The head has not ended yet, and is not over ``maximumLength`` so far.
        case incomplete
        /// A head a full parser should see (unusual, malformed or too long).
        case unsupported
        case head(HTTPHead)
    }

    /// Scans the head at the start of `bytes`.
    package static func scan(_ bytes: UnsafeRawBufferPointer) -> Scan {
        switch endOfHead(bytes) {
        case .incomplete: .incomplete
        case .unsupported: .unsupported
        case .end(let end): HTTPHead(bytes, length: end).map { .head($0) } ?? .unsupported
        }
    }

    enum End { case incomplete, unsupported, end(Int) }

    /// Where the head at the start of `bytes` ends: just past its blank line. Bytes no head
    /// holds (a control or non-ASCII byte, a CR or LF alone) make it unsupported at once, so
    /// that what is not HTTP/1 at all (a TLS handshake sent to a plain-text port) goes to the
    /// full parser, which refuses it, instead of waiting here for a blank line.
    static func endOfHead(_ bytes: UnsafeRawBufferPointer) -> End {
        let limit = min(bytes.count, maximumLength)
        var previous: UInt8 = 0
        var index = 0
        while index < limit {
            // Eight bytes at a time while they are all visible or spaces: most of a head.
            if previous != cr, index + 8 <= limit, Self.allPlain(bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self)) {
                index += 8
                previous = bytes[index - 1]
                continue
            }
            let byte = bytes[index]
            if previous == cr, byte != lf { return .unsupported }
            if (byte >= space && byte < 0x7F) || byte == tab {
                // The usual byte of a head.
            } else if byte == lf {
                guard previous == cr else { return .unsupported }
                if index >= 3, bytes[index - 2] == lf { return .end(index + 1) }
            } else if byte != cr {
                return .unsupported
            }
            previous = byte
            index += 1
        }
        return bytes.count >= maximumLength ? .unsupported : .incomplete
    }

    private static let ones: UInt64 = 0x0101_0101_0101_0101
    private static let highBits: UInt64 = 0x8080_8080_8080_8080

    /// Whether each of the word's bytes is from space to `~` (none a control, DEL or non-ASCII).
    static func allPlain(_ word: UInt64) -> Bool {
        // A byte below 0x20 sets its high bit in `word - 0x20…` where `word` has it clear; DEL
        // is the zero byte of `word ^ 0x7F…`.
        let belowSpace = (word &- ones &* 0x20) & ~word & highBits
        let deleted = word ^ (ones &* 0x7F)
        let hasDelete = (deleted &- ones) & ~deleted & highBits
        return (word & highBits) | belowSpace | hasDelete == 0
    }

    /// The offset of the first CR at or after `start`.
    private static func nextCR(_ bytes: UnsafeRawBufferPointer, from start: Int, before limit: Int) -> Int? {
        var index = start
        while index + 8 <= limit {
            let word = bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self) ^ (ones &* UInt64(cr))
            if (word &- ones) & ~word & highBits != 0 { break }
            index += 8
        }
        while index < limit {
            if bytes[index] == cr { return index }
            index += 1
        }
        return nil
    }

    /// The lines of a head that ``endOfHead(_:)`` found to end at `length`: every CR in it is
    /// part of a CRLF, and no byte is a control one but a tab.
    private init?(_ bytes: UnsafeRawBufferPointer, length: Int) {
        guard let firstEnd = Self.nextCR(bytes, from: 0, before: length), firstEnd > 0 else { return nil }
        for index in 0..<firstEnd where bytes[index] == tab { return nil }
        var fields: [Field] = []
        fields.reserveCapacity(12)
        var start = firstEnd + 2
        // The head ends with an empty line, at `length - 2`.
        while start < length - 2 {
            guard let end = Self.nextCR(bytes, from: start, before: length) else { return nil }
            var colon = start
            while colon < end, Self.isTokenByte(bytes[colon]) { colon += 1 }
            guard colon > start, colon < end, bytes[colon] == UInt8(ascii: ":") else { return nil }
            var valueStart = colon + 1
            while valueStart < end, bytes[valueStart] == space || bytes[valueStart] == tab { valueStart += 1 }
            var valueEnd = end
            while valueEnd > valueStart, bytes[valueEnd - 1] == space || bytes[valueEnd - 1] == tab { valueEnd -= 1 }
            fields.append(Field(line: start..<end + 2, name: start..<colon, value: valueStart..<valueEnd))
            start = end + 2
        }
        self.startLine = 0..<firstEnd
        self.fields = fields
        self.length = length
    }

    /// Whether the field's name is `lowercased` (lowercase ASCII), in any case.
    package func name(of field: Field, in bytes: UnsafeRawBufferPointer, is lowercased: StaticString) -> Bool {
        Self.equalsIgnoringCase(bytes, field.name, lowercased)
    }

    /// The first field named `lowercased`, if any.
    package func field(named lowercased: StaticString, in bytes: UnsafeRawBufferPointer) -> Field? {
        fields.first { name(of: $0, in: bytes, is: lowercased) }
    }

    /// Whether a field's name is one that describes the connection rather than the message
    /// (RFC 9110, section 7.6.1), or one a relay sets itself: `Host`, `Authorization`,
    /// `Content-Length`.
    package func isHopByHop(_ field: Field, in bytes: UnsafeRawBufferPointer) -> Bool {
        Self.isHopByHop(name: UnsafeRawBufferPointer(rebasing: bytes[field.name]))
    }

    /// Whether a response header of the upstream's never reaches the client: the hop-by-hop
    /// ones, challenges (the client authenticates to the proxy, not to the upstream) and cookies
    /// (they belong to the proxy's session with the upstream), whatever the upstream sends.
    package static func isWithheldFromClient(name: UnsafeRawBufferPointer) -> Bool {
        let all = 0..<name.count
        return switch name.count {
        case 10: equalsIgnoringCase(name, all, "set-cookie") || isHopByHop(name: name)
        case 16: equalsIgnoringCase(name, all, "www-authenticate") || isHopByHop(name: name)
        default: isHopByHop(name: name)
        }
    }

    /// Whether `name`, in any case, is one of the hop-by-hop headers of
    /// ``isHopByHop(_:in:)``. Its length picks the one or two names it is compared with: this
    /// runs for every header of every relayed message.
    package static func isHopByHop(name: UnsafeRawBufferPointer) -> Bool {
        let all = 0..<name.count
        return switch name.count {
        case 2: equalsIgnoringCase(name, all, "te")
        case 4: equalsIgnoringCase(name, all, "host")
        case 7: equalsIgnoringCase(name, all, "trailer") || equalsIgnoringCase(name, all, "upgrade")
        case 10: equalsIgnoringCase(name, all, "connection") || equalsIgnoringCase(name, all, "keep-alive")
        case 13: equalsIgnoringCase(name, all, "authorization")
        case 14: equalsIgnoringCase(name, all, "content-length")
        case 16: equalsIgnoringCase(name, all, "proxy-connection")
        case 17: equalsIgnoringCase(name, all, "transfer-encoding")
        case 18: equalsIgnoringCase(name, all, "proxy-authenticate")
        case 19: equalsIgnoringCase(name, all, "proxy-authorization")
        default: false
        }
    }

    /// The status code of a response head: `HTTP/1.x` and three digits.
    package func statusCode(in bytes: UnsafeRawBufferPointer) -> Int? {
        let line = startLine
        guard line.count >= 12, Self.startsWith(bytes, at: line.lowerBound, "HTTP/1."),
              bytes[line.lowerBound + 7] == UInt8(ascii: "0") || bytes[line.lowerBound + 7] == UInt8(ascii: "1"),
              bytes[line.lowerBound + 8] == space, line.count == 12 || bytes[line.lowerBound + 12] == space else { return nil }
        guard let code = Self.decimal(bytes, line.lowerBound + 9..<line.lowerBound + 12) else { return nil }
        return code >= 100 ? code : nil
    }

    /// The length of the body a response head announces when exactly one `Content-Length` of
    /// digits frames it and no `Transfer-Encoding` does; `nil` for any other framing.
    package func framedBodyLength(in bytes: UnsafeRawBufferPointer) -> Int? {
        var length: Int?
        for field in fields {
            if name(of: field, in: bytes, is: "transfer-encoding") { return nil }
            guard name(of: field, in: bytes, is: "content-length") else { continue }
            guard length == nil, field.value.count <= 12, let value = Self.decimal(bytes, field.value) else { return nil }
            length = value
        }
        return length
    }

    /// The number `bytes[range]` spells in decimal digits only; `nil` if empty or anything else.
    private static func decimal(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> Int? {
        guard !range.isEmpty else { return nil }
        var value = 0
        for index in range {
            let digit = bytes[index] &- UInt8(ascii: "0")
            guard digit < 10 else { return nil }
            value = value * 10 + Int(digit)
        }
        return value
    }

    /// Whether the connection may carry another exchange after this response: HTTP/1.1 without
    /// a `close` among its `Connection` options (an HTTP/1.0 answer is taken as no).
    package func keepsAlive(in bytes: UnsafeRawBufferPointer) -> Bool {
        guard Self.startsWith(bytes, at: startLine.lowerBound, "HTTP/1.1 ") else { return false }
        for field in fields where name(of: field, in: bytes, is: "connection") {
            var start = field.value.lowerBound
            while start < field.value.upperBound {
                var end = start
                while end < field.value.upperBound, bytes[end] != UInt8(ascii: ",") { end += 1 }
                var (first, last) = (start, end)
                while first < last, bytes[first] == space || bytes[first] == tab { first += 1 }
                while last > first, bytes[last - 1] == space || bytes[last - 1] == tab { last -= 1 }
                if last - first == 5, Self.equalsIgnoringCase(bytes, first..<last, "close") { return false }
                start = end + 1
            }
        }
        return true
    }

    /// Whether `bytes[range]` is `lowercased` (lowercase ASCII) in any case.
    static func equalsIgnoringCase(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>, _ lowercased: StaticString) -> Bool {
        guard range.count == lowercased.utf8CodeUnitCount else { return false }
        let expected = lowercased.utf8Start
        for (offset, index) in range.enumerated() {
            let byte = bytes[index]
            if (byte &- UInt8(ascii: "A") < 26 ? byte | 0x20 : byte) != expected[offset] { return false }
        }
        return true
    }

    /// Whether `bytes[range]` is `text`, exactly.
    package static func equals(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>, _ text: StaticString) -> Bool {
        equals(bytes, range, UnsafeRawBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    }

    /// Whether `bytes[range]` are `other`'s bytes (false for a range outside `bytes`), compared
    /// eight at a time: a relay compares each request's `Authorization`, a token of several
    /// hundred bytes, with the last one.
    package static func equals(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>, _ other: UnsafeRawBufferPointer) -> Bool {
        guard range.count == other.count, range.lowerBound >= 0, range.upperBound <= bytes.count else { return false }
        var offset = 0
        while offset + 8 <= other.count {
            let word = bytes.loadUnaligned(fromByteOffset: range.lowerBound + offset, as: UInt64.self)
            guard word == other.loadUnaligned(fromByteOffset: offset, as: UInt64.self) else { return false }
            offset += 8
        }
        while offset < other.count {
            guard bytes[range.lowerBound + offset] == other[offset] else { return false }
            offset += 1
        }
        return true
    }

    static func startsWith(_ bytes: UnsafeRawBufferPointer, at start: Int, _ prefix: StaticString) -> Bool {
        let end = start + prefix.utf8CodeUnitCount
        return end <= bytes.count && equals(bytes, start..<end, prefix)
    }

    /// `tchar` of RFC 9110: what a header name or a method is made of.
    static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
             UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"),
             UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            true
        default:
            false
        }
    }
}

private let cr = UInt8(ascii: "\r")
private let lf = UInt8(ascii: "\n")
private let space = UInt8(ascii: " ")
private let tab = UInt8(ascii: "\t")
