import Foundation
import OCITestSupport
import Testing

/// Upstream connections that fail in the middle of a blob's body, on pulls and on pushes:
/// reset, closed, or stalled (silent on a pull; no longer reading on a push).
/// The upstream is `Tests/Scripts/faulty_upstream.py`, since a registry cannot be made to fail
/// this way on purpose.
@Suite("oci-connector-proxy when the upstream fails mid-body")
struct UpstreamFaultTests {
    /// Every fault is a failed transfer for the client, never a complete-looking short body;
    /// the next request is served whole (a dead upstream connection is not reused), and
    /// once the clients are gone no request is left under way and no descriptor is kept.
    @Test func failuresMidBodyFailTheTransferAndTheNextRequestIsServed() async throws {
        let upstream = try FaultyUpstream.start()
        defer { upstream.stop() }
        let proxy = try await ProxyProcess.start(
            binDirectory: Tool.binDirectory,
            connectorsYAML: ConnectorYAML.connector(name: "up", address: "http://127.0.0.1:\(upstream.port)"),
            extraArguments: ["--upstream-response-timeout", "2", "--admin-listen", "127.0.0.1:0"])
        defer { proxy.stop() }
        let token = try proxy.token()
        let base = "http://\(proxy.host)/v2/namespaces/team-a/connectors/up"
        let digest = "sha256:" + String(repeating: "a", count: 64)
        let directory = try Loopback.temporaryDirectory("faults")
        defer { try? FileManager.default.removeItem(at: directory) }
        let (file, _) = try randomBlob(mebibytes: 16, in: directory)
        let output = directory.appendingPathComponent("out")

        func servedWhole() throws {
            let whole = try FaultyUpstream.curl(["-o", output.path, "\(base)/none/app/blobs/\(digest)"], token: token)
            #expect(whole.exit == 0 && whole.status == 200 && whole.bytes == FaultyUpstream.blobSize, "\(whole)")
        }
        try servedWhole()
        let descriptorsBefore = proxy.openDescriptors

        for fault in ["reset", "close", "stall"] {
            // A pull: the answer has begun (200, its length promised), so the client connection
            // is cut, and curl reports a partial transfer.
            let pull = try FaultyUpstream.curl(["-o", output.path, "\(base)/\(fault)/app/blobs/\(digest)"], token: token)
            #expect(pull.status == 200, "\(fault) pull: \(pull)")
            #expect(pull.exit != 0 && pull.bytes < FaultyUpstream.blobSize, "\(fault) pull looked complete: \(pull)")
            try servedWhole()

            // A push: the upstream fails while it reads the body, before any answer: a clear error.
            let started = try Curl.request("POST", "\(base)/\(fault)/app/blobs/uploads/", token: token)
            let location = try #require(started.header("Location"), "\(started.status) \(started.text)")
            let push = try FaultyUpstream.curl(
                ["-X", "PATCH", "-H", "Content-Type: application/octet-stream", "-T", file.path, "-o", output.path, location],
                token: token)
            let body = (try? String(contentsOf: output, encoding: .utf8)) ?? ""
            let expected = fault == "stall" ? 504 : 502
            #expect(push.status == expected, "\(fault) push: \(push) \(body)")
            #expect(body.contains(#""code":"UNAVAILABLE""#), "\(fault) push: \(body)")
            if fault == "stall" { #expect(body.contains("took none of the request body"), "\(body)") }
            try servedWhole()
        }

        // Nothing is left under way: every request was finished, and what it held let go.
        let admin = "http://127.0.0.1:\(try #require(proxy.adminPort))/metrics"
        var inFlight: Double? = nil
        var descriptorsAfter = Int.max
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            inFlight = ProxyOperationsTests.samples(try Curl.request("GET", admin).text)["oci_connector_requests_in_flight"]
            descriptorsAfter = proxy.openDescriptors
            if inFlight == 0, descriptorsAfter <= descriptorsBefore + 2 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        print(
            "upstream faults mid-body: descriptors \(descriptorsBefore) → \(descriptorsAfter), requests in flight \(inFlight ?? -1)"
        )
        #expect(inFlight == 0)
        #expect(descriptorsAfter <= descriptorsBefore + 2, "descriptors \(descriptorsBefore) → \(descriptorsAfter)")
        #expect(proxy.isRunning)
    }

    /// An upstream that never accepts the connection (as a host that drops packets): reads and
    /// forwarded requests alike end in 504 after `--upstream-connect-timeout`, in the registry's
    /// error format, and the connector beside it is served meanwhile.
    @Test func anUpstreamThatNeverAcceptsIs504AfterTheConnectTimeout() async throws {
        let upstream = try FaultyUpstream.start()
        defer { upstream.stop() }
        let connectors =
            ConnectorYAML.connector(name: "up", address: "http://127.0.0.1:\(upstream.port)") + "---\n"
            + ConnectorYAML.connector(name: "hole", address: "http://127.0.0.1:\(upstream.unacceptingPort)")
        let proxy = try await ProxyProcess.start(
            binDirectory: Tool.binDirectory, connectorsYAML: connectors,
            extraArguments: ["--upstream-connect-timeout", "1"])
        defer { proxy.stop() }
        let base = "http://\(proxy.host)/v2/namespaces/team-a/connectors"
        let digest = "sha256:" + String(repeating: "b", count: 64)
        for (method, path) in [
            ("GET", "hole/app/manifests/v1"), ("HEAD", "hole/app/blobs/\(digest)"), ("POST", "hole/app/blobs/uploads/"),
        ] {
            let answer = try Curl.request(method, "\(base)/\(path)", token: try proxy.token(connector: "team-a/hole"))
            #expect(answer.status == 504, "\(method) \(path): \(answer.status) \(answer.text)")
            if method != "HEAD" {
                #expect(answer.text.contains(#""code":"UNAVAILABLE""#), "\(answer.text)")
                #expect(answer.text.contains("did not accept a connection in time"), "\(answer.text)")
            }
        }
        let served = try Curl.request("HEAD", "\(base)/up/none/app/blobs/\(digest)", token: try proxy.token())
        #expect(served.status == 200)
        #expect(proxy.isRunning)
    }
}
