/// An `Authorization` header value as a key of the verified-token cache, compared in constant
/// time.
///
/// A lookup compares the client's header with the remembered headers it meets on its way
/// (a dictionary compares the keys in a probe sequence with `==`), and a connection's next
/// request with the header its last one verified with. `String`'s `==` stops at the first
/// byte that differs, so how long a refusal takes would tell a client how much of a
/// remembered token it guessed right. Here every byte is compared whatever the outcome; only
/// the lengths, which are not secret, end a comparison early.
struct CredentialKey: Hashable, Sendable {
    let header: String

    init(_ header: String) {
        self.header = header
    }

    static func == (lhs: CredentialKey, rhs: CredentialKey) -> Bool {
        constantTimeEquals(lhs.header, rhs.header)
    }

    func hash(into hasher: inout Hasher) {
        hasher.combine(header)
    }
}

/// Whether `lhs` and `rhs` are the same bytes, in a time that depends on their lengths only.
func constantTimeEquals(_ lhs: String, _ rhs: String) -> Bool {
    var lhs = lhs
    var rhs = rhs
    return lhs.withUTF8 { left in
        rhs.withUTF8 { right in
            guard left.count == right.count else { return false }
            var difference: UInt8 = 0
            for index in 0..<left.count { difference |= left[index] ^ right[index] }
            return difference == 0
        }
    }
}
