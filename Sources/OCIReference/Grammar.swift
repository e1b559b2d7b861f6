// The grammar of image references, as the CNCF distribution `reference` package defines it.
//
//     reference          := name [ ":" tag ] [ "@" digest ]
//     name               := [ domain "/" ] path
//     domain             := host [ ":" port ]
//     host               := domain-name | "[" ipv6 "]"
//     domain-name        := domain-component [ "." domain-component ]*
//     domain-component   := /[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]/
//     ipv6               := /[a-fA-F0-9:]+/
//     port               := /[0-9]+/
//     path               := path-component [ "/" path-component ]*      ; at most 255 bytes
//     path-component     := alpha-numeric [ separator alpha-numeric ]*
//     alpha-numeric      := /[a-z0-9]+/
//     separator          := /[_.]|__|[-]+/
//     tag                := /[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}/
//     digest             := algorithm ":" encoded
//     algorithm          := algorithm-component [ /[+._-]/ algorithm-component ]*
//     algorithm-component:= /[A-Za-z][A-Za-z0-9]*/
//     encoded            := /[0-9a-fA-F]{32,}/                           ; generic algorithms
//                         | /[a-f0-9]{64}/  for sha256, /[a-f0-9]{96}/ for sha384,
//                           /[a-f0-9]{128}/ for sha512
//
// Docker's reading of a name decides whether the first path element is a domain: it is one when
// it contains "." or ":", is "localhost", or holds an uppercase letter. Otherwise the name lives
// on Docker Hub (`docker.io`), and a single-element name is an official image under `library/`.
//
// The scanners below work on UTF-8 bytes: every character of the grammar is ASCII, so any other
// byte is simply invalid.

enum ASCII {
    static let slash = UInt8(ascii: "/")
    static let colon = UInt8(ascii: ":")
    static let at = UInt8(ascii: "@")
    static let dot = UInt8(ascii: ".")
    static let dash = UInt8(ascii: "-")
    static let underscore = UInt8(ascii: "_")
    static let plus = UInt8(ascii: "+")
    static let openBracket = UInt8(ascii: "[")
    static let closeBracket = UInt8(ascii: "]")
    static let equals = UInt8(ascii: "=")

    @inline(__always) static func isDigit(_ byte: UInt8) -> Bool {
        byte &- UInt8(ascii: "0") < 10
    }

    @inline(__always) static func isLower(_ byte: UInt8) -> Bool {
        byte &- UInt8(ascii: "a") < 26
    }

    @inline(__always) static func isUpper(_ byte: UInt8) -> Bool {
        byte &- UInt8(ascii: "A") < 26
    }

    @inline(__always) static func isLowerAlphanumeric(_ byte: UInt8) -> Bool {
        isLower(byte) || isDigit(byte)
    }

    @inline(__always) static func isAlphanumeric(_ byte: UInt8) -> Bool {
        isLower(byte) || isDigit(byte) || isUpper(byte)
    }

    @inline(__always) static func isLetter(_ byte: UInt8) -> Bool {
        isLower(byte) || isUpper(byte)
    }

    @inline(__always) static func isHex(_ byte: UInt8) -> Bool {
        isDigit(byte) || (byte | 0x20) &- UInt8(ascii: "a") < 6
    }

    @inline(__always) static func isLowerHex(_ byte: UInt8) -> Bool {
        isDigit(byte) || byte &- UInt8(ascii: "a") < 6
    }

    /// A printable rendering of one byte for error messages.
    static func show(_ byte: UInt8) -> String {
        if byte >= 0x20 && byte < 0x7f {
            return "'\(Character(Unicode.Scalar(byte)))'"
        }
        return "byte 0x\(String(byte, radix: 16))"
    }
}

/// Scanners for the pieces of the grammar. Each one checks `bytes[range]` and returns why it is
/// not valid, or `nil` when it is.
enum GrammarScanner {
    typealias Bytes = UnsafeBufferPointer<UInt8>

    /// `tag := /[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}/`
    static func tagProblem(_ bytes: Bytes, _ range: Range<Int>) -> String? {
        guard !range.isEmpty else { return "the tag is empty" }
        guard range.count <= 128 else { return "the tag is \(range.count) characters long; at most 128 are allowed" }
        let first = bytes[range.lowerBound]
        guard ASCII.isAlphanumeric(first) || first == ASCII.underscore else {
            return "a tag must start with a letter, digit or '_', not \(ASCII.show(first))"
        }
        for index in range.dropFirst() {
            let byte = bytes[index]
            guard ASCII.isAlphanumeric(byte) || byte == ASCII.underscore || byte == ASCII.dot || byte == ASCII.dash else {
                return "a tag may not contain \(ASCII.show(byte))"
            }
        }
        return nil
    }

    /// `domain := host [":" port]`; returns the problem, or `nil`.
    static func domainProblem(_ bytes: Bytes, _ range: Range<Int>) -> String? {
        guard !range.isEmpty else { return "the registry host is empty" }
        var index = range.lowerBound
        if bytes[index] == ASCII.openBracket {
            index += 1
            let start = index
            while index < range.upperBound, bytes[index] != ASCII.closeBracket {
                let byte = bytes[index]
                guard ASCII.isHex(byte) || byte == ASCII.colon else {
                    return "an IPv6 address may not contain \(ASCII.show(byte))"
                }
                index += 1
            }
            guard index < range.upperBound else { return "the IPv6 address has no closing ']'" }
            guard index > start else { return "the IPv6 address is empty" }
            index += 1
        } else {
            // domain-component ["." domain-component]*
            var componentStart = index
            while index < range.upperBound, bytes[index] != ASCII.colon {
                let byte = bytes[index]
                if byte == ASCII.dot {
                    if let problem = domainComponentProblem(bytes, componentStart..<index) { return problem }
                    componentStart = index + 1
                } else if !(ASCII.isAlphanumeric(byte) || byte == ASCII.dash) {
                    return "a registry host may not contain \(ASCII.show(byte))"
                }
                index += 1
            }
            if let problem = domainComponentProblem(bytes, componentStart..<index) { return problem }
        }
        guard index < range.upperBound else { return nil }
        guard bytes[index] == ASCII.colon else {
            return "unexpected \(ASCII.show(bytes[index])) after the registry host"
        }
        index += 1
        guard index < range.upperBound else { return "the port is empty" }
        guard range.upperBound - index <= 5 else { return "the port is too long" }
        for portIndex in index..<range.upperBound where !ASCII.isDigit(bytes[portIndex]) {
            return "the port may only contain digits, not \(ASCII.show(bytes[portIndex]))"
        }
        return nil
    }

    private static func domainComponentProblem(_ bytes: Bytes, _ range: Range<Int>) -> String? {
        guard !range.isEmpty else { return "the registry host has an empty label" }
        guard bytes[range.lowerBound] != ASCII.dash, bytes[range.upperBound - 1] != ASCII.dash else {
            return "a registry host label may not start or end with '-'"
        }
        return nil
    }

    /// What went wrong in a path, with the code that says it.
    struct PathProblem {
        var code: ReferenceError.Code
        var reason: String
    }

    /// `path := path-component ["/" path-component]*`
    static func pathProblem(_ bytes: Bytes, _ range: Range<Int>) -> PathProblem? {
        var index = range.lowerBound
        let end = range.upperBound
        while true {
            // One path-component: alpha-numeric [separator alpha-numeric]*
            if let problem = expectAlphanumeric(bytes, index, end, afterSeparator: nil) {
                return problem
            }
            index += 1
            while index < end {
                let byte = bytes[index]
                if ASCII.isLowerAlphanumeric(byte) {
                    index += 1
                    continue
                }
                if byte == ASCII.slash { break }
                let separatorStart = index
                switch byte {
                case ASCII.dot:
                    index += 1
                case ASCII.underscore:
                    index += 1
                    if index < end, bytes[index] == ASCII.underscore { index += 1 }
                case ASCII.dash:
                    while index < end, bytes[index] == ASCII.dash { index += 1 }
                default:
                    return characterProblem(byte)
                }
                if let problem = expectAlphanumeric(bytes, index, end, afterSeparator: bytes[separatorStart]) {
                    return problem
                }
                index += 1
            }
            if index == end { return nil }
            index += 1  // the "/"
        }
    }

    /// Checks for the letter or digit that must start a component and follow every separator.
    /// The message is only built on failure: this runs for every separator of every parse.
    private static func expectAlphanumeric(_ bytes: Bytes, _ index: Int, _ end: Int, afterSeparator separator: UInt8?)
        -> PathProblem?
    {
        if index < end, ASCII.isLowerAlphanumeric(bytes[index]) { return nil }
        let place = separator.map { "the separator \(ASCII.show($0))" } ?? "the start of a path component"
        guard index < end else {
            return PathProblem(code: .invalidFormat, reason: "the repository name is missing a letter or digit after \(place)")
        }
        let byte = bytes[index]
        if ASCII.isLowerAlphanumeric(byte) { return nil }
        if byte == ASCII.slash {
            return PathProblem(code: .invalidFormat, reason: "the repository name has an empty path component")
        }
        if byte == ASCII.dot || byte == ASCII.dash || byte == ASCII.underscore {
            return PathProblem(code: .invalidFormat, reason: "\(ASCII.show(byte)) may not follow \(place) in a repository name")
        }
        return characterProblem(byte)
    }

    private static func characterProblem(_ byte: UInt8) -> PathProblem {
        if ASCII.isUpper(byte) {
            return PathProblem(code: .uppercaseRepository, reason: "repository name must be lowercase")
        }
        return PathProblem(code: .invalidFormat, reason: "a repository name may not contain \(ASCII.show(byte))")
    }
}
