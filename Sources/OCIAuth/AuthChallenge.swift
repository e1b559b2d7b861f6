/// One authentication challenge from a `WWW-Authenticate` header (RFC 9110, section 11.6.1),
/// such as `Bearer realm="https://auth.example.com/token",service="registry"`.
public struct AuthChallenge: Hashable, Sendable {
    /// The scheme, lowercased: `bearer`, `basic`, …
    public let scheme: String
    /// The parameters, keyed by lowercased name.
    public let parameters: [String: String]
    /// The token68 form of the challenge's data, when it has one instead of parameters.
    public let token68: String?

    /// Creates a challenge; the scheme and parameter names are lowercased.
    public init(scheme: String, parameters: [String: String] = [:], token68: String? = nil) {
        self.scheme = scheme.lowercased()
        self.parameters = Dictionary(parameters.map { ($0.key.lowercased(), $0.value) }, uniquingKeysWith: { first, _ in first })
        self.token68 = token68
    }

    /// A parameter by case-insensitive name.
    public subscript(parameter name: String) -> String? {
        parameters[name.lowercased()]
    }

    /// Parses every challenge in one or more `WWW-Authenticate` header values.
    ///
    /// - Throws: ``ChallengeParseError`` for malformed input; it never traps.
    public static func parse(_ headerValues: [String]) throws(ChallengeParseError) -> [AuthChallenge] {
        var challenges: [AuthChallenge] = []
        for value in headerValues {
            var parser = ChallengeParser(Array(value.utf8))
            challenges += try parser.parseAll(original: value)
        }
        return challenges
    }

    /// Parses one header value.
    public static func parse(_ headerValue: String) throws(ChallengeParseError) -> [AuthChallenge] {
        try parse([headerValue])
    }
}

/// A malformed `WWW-Authenticate` header.
public struct ChallengeParseError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What is wrong.
    public let reason: String
    /// The byte offset in the header value where parsing stopped.
    public let offset: Int

    public var description: String { "malformed WWW-Authenticate header at byte \(offset): \(reason)" }
}

/// The RFC 9110 grammar, with lists that may hold empty elements:
///
///     WWW-Authenticate = #challenge
///     challenge        = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
///     auth-param       = token BWS "=" BWS ( token / quoted-string )
///     token68          = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
///     quoted-string    = DQUOTE *( qdtext / quoted-pair ) DQUOTE
///
/// Commas separate both challenges and the parameters of one challenge: an element that reads as
/// `token "="` continues the current challenge, anything else starts the next one.
struct ChallengeParser {
    let bytes: [UInt8]
    var index = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    mutating func parseAll(original: String) throws(ChallengeParseError) -> [AuthChallenge] {
        var challenges: [AuthChallenge] = []
        skipSeparators()
        while index < bytes.count {
            challenges.append(try parseChallenge())
            skipWhitespace()
            if index < bytes.count {
                guard bytes[index] == UInt8(ascii: ",") else { throw failure("expected ',' between challenges") }
            }
            skipSeparators()
        }
        return challenges
    }

    private mutating func parseChallenge() throws(ChallengeParseError) -> AuthChallenge {
        guard let scheme = readToken() else { throw failure("expected an authentication scheme") }
        var parameters: [String: String] = [:]
        let afterScheme = index
        skipWhitespace()
        guard index > afterScheme, index < bytes.count, bytes[index] != UInt8(ascii: ",") else {
            return AuthChallenge(scheme: scheme)  // A scheme alone.
        }
        // token68, unless this reads as the start of an auth-param.
        if !startsParameter() {
            let start = index
            while index < bytes.count, Self.isToken68(bytes[index]) { index += 1 }
            while index < bytes.count, bytes[index] == UInt8(ascii: "=") { index += 1 }
            guard index > start else { throw failure("expected token68 or parameters after the scheme") }
            let token68 = String(decoding: bytes[start..<index], as: UTF8.self)
            return AuthChallenge(scheme: scheme, token68: token68)
        }
        while true {
            let name = readToken()!.lowercased()
            skipWhitespace()
            index += 1  // "="
            skipWhitespace()
            let value: String
            if index < bytes.count, bytes[index] == UInt8(ascii: "\"") {
                value = try readQuotedString()
            } else if let token = readToken() {
                value = token
            } else {
                throw failure("expected a token or quoted string for parameter \(name)")
            }
            // RFC 9110: each parameter name appears at most once per challenge.
            guard parameters[name] == nil else { throw failure("parameter \(name) appears twice") }
            parameters[name] = value
            // More parameters follow a comma when the next element reads `token =`.
            let beforeSeparators = index
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: ",") else {
                if index < bytes.count { throw failure("unexpected character after parameter \(name)") }
                break
            }
            skipSeparators()
            if !startsParameter() {
                index = beforeSeparators
                break
            }
        }
        return AuthChallenge(scheme: scheme, parameters: parameters)
    }

    /// Whether the input at `index` is `token BWS "="` followed by something other than "=",
    /// the end, or a comma: an auth-param rather than a token68 or a new challenge.
    private func startsParameter() -> Bool {
        var probe = index
        let start = probe
        while probe < bytes.count, Self.isTokenChar(bytes[probe]) { probe += 1 }
        guard probe > start else { return false }
        while probe < bytes.count, bytes[probe] == UInt8(ascii: " ") || bytes[probe] == UInt8(ascii: "\t") { probe += 1 }
        guard probe < bytes.count, bytes[probe] == UInt8(ascii: "=") else { return false }
        probe += 1
        while probe < bytes.count, bytes[probe] == UInt8(ascii: " ") || bytes[probe] == UInt8(ascii: "\t") { probe += 1 }
        guard probe < bytes.count else { return false }
        return bytes[probe] == UInt8(ascii: "\"") || Self.isTokenChar(bytes[probe])
    }

    private mutating func readToken() -> String? {
        let start = index
        while index < bytes.count, Self.isTokenChar(bytes[index]) { index += 1 }
        return index > start ? String(decoding: bytes[start..<index], as: UTF8.self) : nil
    }

    private mutating func readQuotedString() throws(ChallengeParseError) -> String {
        index += 1  // opening quote
        var value: [UInt8] = []
        while index < bytes.count {
            let byte = bytes[index]
            switch byte {
            case UInt8(ascii: "\""):
                index += 1
                return String(decoding: value, as: UTF8.self)
            case UInt8(ascii: "\\"):
                index += 1
                guard index < bytes.count else { throw failure("unterminated escape in quoted string") }
                value.append(bytes[index])
            case 0x00...0x08, 0x0a...0x1f, 0x7f:
                throw failure("control character in quoted string")
            default:
                value.append(byte)
            }
            index += 1
        }
        throw failure("unterminated quoted string")
    }

    private mutating func skipWhitespace() {
        while index < bytes.count, bytes[index] == UInt8(ascii: " ") || bytes[index] == UInt8(ascii: "\t") { index += 1 }
    }

    /// Skips whitespace and the commas of empty list elements.
    private mutating func skipSeparators() {
        while index < bytes.count,
            bytes[index] == UInt8(ascii: " ") || bytes[index] == UInt8(ascii: "\t") || bytes[index] == UInt8(ascii: ",")
        {
            index += 1
        }
    }

    private func failure(_ reason: String) -> ChallengeParseError {
        ChallengeParseError(reason: reason, offset: index)
    }

    /// tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
    static func isTokenChar(_ byte: UInt8) -> Bool {
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

    static func isToken68(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
            UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"), UInt8(ascii: "+"), UInt8(ascii: "/"):
            true
        default:
            false
        }
    }
}
