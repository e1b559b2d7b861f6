import Foundation
import OCITestSupport
import Testing

/// Upstream tokens that die while a workload is still pushing. The token server says they live
/// three seconds, and the registry really refuses them after that (their `exp` is dated back by
/// the minute of leeway distribution allows).
@Suite("oci-connector-proxy with short-lived upstream tokens")
struct UpstreamTokenExpiryTests {
    /// A chunked upload whose chunks are further apart than a token lives, one of them sent
    /// slower than that, completes; the blob comes back whole.
    @Test func aChunkedUploadOutlivesItsUpstreamTokens() async throws {
        let (registry, issuer) = try await TokenAuthRegistry.start(expiresIn: 3)
        defer { registry.stop() }
        defer { issuer.stop() }
        issuer.setExpiresExactly(true)
        let proxy = try await ProxyProcess.start(
            binDirectory: Tool.binDirectory,
            connectorsYAML: ConnectorYAML.connector(
                name: "reg", address: registry.url, username: SharedRegistries.robotUser.0,
                password: SharedRegistries.robotUser.1))
        defer { proxy.stop() }
        let token = try proxy.token(connector: "team-a/reg")
        let base = "http://\(proxy.host)/v2/namespaces/team-a/connectors/reg/expiry/app"

        // A token from the same server, asked for after the proxy's: once the registry refuses
        // it, it refuses the proxy's too.
        var witnesses = 0
        func waitUntilTheProxysTokenIsDead() async throws {
            witnesses += 1
            let witness = try Self.issuedToken(issuer, scope: "repository:expiry/app:pull,push")
            let probe = { try Curl.request("GET", "\(registry.url)/v2/", headers: ["Authorization": "Bearer \(witness)"]) }
            #expect(try probe().status == 200)
            let deadline = ContinuousClock.now + .seconds(15)
            while try probe().status != 401 {
                guard ContinuousClock.now < deadline else {
                    Issue.record("the registry still accepts a token that said it lived 3 s")
                    return
                }
                try await Task.sleep(for: .milliseconds(100))
            }
        }

        let parts = (0..<4).map { index in Data((0..<(256 << 10)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ index) }) }
        let whole = parts.reduce(Data(), +)
        let digest = sha256Digest(whole)
        let directory = try Loopback.temporaryDirectory("expiry")
        defer { try? FileManager.default.removeItem(at: directory) }
        let octets = ["Content-Type": "application/octet-stream"]

        let started = try Curl.request("POST", "\(base)/blobs/uploads/", token: token)
        #expect(started.status == 202, "\(started.status) \(started.text)")
        var location = try #require(started.header("Location"))
        var offset = 0
        for (index, part) in parts.enumerated() {
            try await waitUntilTheProxysTokenIsDead()
            let file = directory.appendingPathComponent("part\(index)")
            try part.write(to: file)
            // The third chunk takes about 5 s to send, longer than a token lives.
            let patch = try Curl.request(
                "PATCH", location,
                headers: octets.merging(["Content-Range": "\(offset)-\(offset + part.count - 1)"]) { $1 }, token: token,
                upload: file, options: index == 2 ? ["--limit-rate", "50K"] : [])
            #expect(patch.status == 202, "chunk \(index): \(patch.status) \(patch.text)")
            location = try #require(patch.header("Location"))
            offset += part.count
        }
        try await waitUntilTheProxysTokenIsDead()
        let finish = try Curl.request("PUT", location + "&digest=\(digest)", headers: octets, token: token)
        #expect(finish.status == 201, "\(finish.status) \(finish.text)")

        try await waitUntilTheProxysTokenIsDead()
        let pulled = try Curl.request("GET", "\(base)/blobs/\(digest)", token: token)
        #expect(pulled.status == 200, "\(pulled.status) \(pulled.text)")
        #expect(sha256Digest(pulled.body) == digest)
        // Each of the 7 requests found the proxy's last token dead: it asked for a new one each time.
        let proxyTokens = issuer.counts.total - issuer.counts.rejected - witnesses
        #expect(proxyTokens >= 7, "\(issuer.counts), \(witnesses) asked for by the test")
    }

    /// A token for `scope`, asked of `issuer` as the robot.
    static func issuedToken(_ issuer: TokenIssuer, scope: String) throws -> String {
        let (user, password) = SharedRegistries.robotUser
        let basic = Data("\(user):\(password)".utf8).base64EncodedString()
        // Not through `Curl`: the issuer's answer holds the token, and the secret search reads
        // what `Curl` receives as what the proxy showed.
        let answer = try runCommand(
            "/usr/bin/curl",
            ["-sf", "-H", "Authorization: Basic \(basic)", "\(issuer.realm)?service=\(issuer.service)&scope=\(scope)"])
        struct Answer: Decodable { var token: String }
        return try JSONDecoder().decode(Answer.self, from: Data(answer.utf8)).token
    }
}
