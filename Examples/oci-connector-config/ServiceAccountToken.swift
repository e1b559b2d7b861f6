import Foundation

/// A Kubernetes service account token as a workload finds it: a file kubelet projects and
/// replaces before it expires (by swapping the `..data` link of the volume).
struct ServiceAccountTokenFile {
    /// Where a token projected for the proxy's audience is usually mounted.
    static let defaultPath = "/var/run/secrets/tokens/oci-connector-proxy"

    let path: String

    /// The token, read now.
    func read() throws -> String {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ToolFailure("cannot read the service account token \(path)")
        }
        let token = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard token.split(separator: ".", omittingEmptySubsequences: false).count == 3 else {
            throw ToolFailure("\(path) does not hold a service account token (a JWT)")
        }
        return token
    }

    /// When a token expires (its `exp`, seconds since 1970), read without verifying it: the proxy
    /// verifies it; this only schedules renewals. `nil` when it says nothing.
    static func expiry(of token: String) -> Int? {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3 else { return nil }
        var base64 = parts[1].replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        guard let data = Data(base64Encoded: base64),
            let claims = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        else { return nil }
        return (claims["exp"] as? NSNumber)?.intValue
    }
}
