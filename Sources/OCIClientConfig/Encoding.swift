/// Exact, deterministic JSON and TOML text: every value escaped, keys in a stable order.
enum JSONText {
    /// A JSON string literal.
    static func string(_ value: String) -> String {
        var output = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": output += "\\\""
            case "\\": output += "\\\\"
            case "\n": output += "\\n"
            case "\r": output += "\\r"
            case "\t": output += "\\t"
            case _ where scalar.value < 0x20 || scalar.value == 0x7f:
                output += "\\u" + hex4(scalar.value)
            default:
                output.unicodeScalars.append(scalar)
            }
        }
        return output + "\""
    }

    static func hex4(_ value: UInt32) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }
}

enum TOMLText {
    /// A TOML basic string. TOML's escapes for quotes, backslashes, control characters and
    /// `\uXXXX` are JSON's, so a JSON string literal is a valid TOML basic string.
    static func string(_ value: String) -> String {
        JSONText.string(value)
    }

    static func array(_ values: [String]) -> String {
        "[" + values.map(string).joined(separator: ", ") + "]"
    }
}

/// A shell-safe single-quoted word, for `.env` files read by `sh` and by docker-style env loaders.
enum ShellText {
    static func quoted(_ value: String) -> String {
        "'" + value.replacingAll("'", with: "'\\''") + "'"
    }
}

extension String {
    func replacingAll(_ target: String, with replacement: String) -> String {
        split(separator: Substring(target), omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
