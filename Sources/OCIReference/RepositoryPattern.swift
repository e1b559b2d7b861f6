/// Glob patterns for repository names, as proxy tokens and `ConnectorBinding`s write them: `*`
/// matches within one path element, `**` across elements, any other byte itself.
///
/// `team/*` matches `team/app` but not `team/app/cache`; `team/**` matches both.
public enum RepositoryPattern {
    /// Whether `name` matches `pattern`.
    public static func matches(_ pattern: String, _ name: String) -> Bool {
        matches(Array(pattern.utf8)[...], Array(name.utf8)[...])
    }

    private static func matches(_ pattern: ArraySlice<UInt8>, _ name: ArraySlice<UInt8>) -> Bool {
        guard let first = pattern.first else { return name.isEmpty }
        if first == UInt8(ascii: "*") {
            let crossesSlash = pattern.dropFirst().first == UInt8(ascii: "*")
            let rest = pattern.dropFirst(crossesSlash ? 2 : 1)
            var index = name.startIndex
            while true {
                if matches(rest, name[index...]) { return true }
                guard index < name.endIndex, crossesSlash || name[index] != UInt8(ascii: "/") else { return false }
                index += 1
            }
        }
        guard let head = name.first, head == first else { return false }
        return matches(pattern.dropFirst(), name.dropFirst())
    }
}
