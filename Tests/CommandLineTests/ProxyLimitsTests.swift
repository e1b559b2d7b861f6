import Foundation
import OCITestSupport
import Testing

/// The limits a platform team sets on the proxy, each met by a real client: requests under way
/// per workload (`429`), upstreams that do not answer in time (`504`), request bodies that stop
/// arriving (`408`), and uploads that take longer than an upstream may stay silent (served).
@Suite("oci-connector-proxy limits")
struct ProxyLimitsTests {
    /// Requests of one workload beyond `--max-requests-per-identity` are refused before they go
    /// upstream, while other workloads are served; the places are given back as requests end
    /// (here, by their clients leaving).
    @Test func aWorkloadBeyondItsLimitIs429() async throws {
        let (stub, proxy) = try await ProxyHardeningTests.proxyInFrontOfStub(extraArguments: [
            "--max-requests-per-identity", "2", "--admin-listen", "127.0.0.1:0",
        ])
        defer { stub.stop() }
        defer { proxy.stop() }
        let base = "http://\(proxy.host)/v2/namespaces/team-a/connectors/up"
        let (token, otherToken) = (try proxy.token(subject: "builder"), try proxy.token(subject: "deployer"))
        func inFlight() throws -> Double? { try ProxyOperationsTests.scrape(proxy).samples["oci_connector_requests_in_flight"] }
        // Two reads the upstream does not answer (for 30 s) hold the workload's two places.
        let silent = try (0..<2).map { _ in
            try ProxyStreamingTests.startCurl([
                "-u", "w:\(token)", "-o", "/dev/null", "-w", "%{http_code}", "\(base)/silent/app/manifests/v1",
            ])
        }
        let deadline = ContinuousClock.now + .seconds(25)
        while try inFlight() != 2, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        try #require(try inFlight() == 2, "the two reads did not get under way")

        let refusal = try Curl.request("GET", "\(base)/plain/app/manifests/v1", token: token)
        #expect(refusal.status == 429)
        #expect(refusal.header("Retry-After") == "1")
        #expect(refusal.text.contains(#""code":"TOOMANYREQUESTS""#), "\(refusal.text)")
        #expect(refusal.text.contains("builder has 2 requests under way"), "\(refusal.text)")
        let limited = try ProxyOperationsTests.scrape(proxy).samples
        #expect(limited[#"oci_connector_requests_limited_total{limit="identity"}"#] == 1)
        #expect(limited[#"oci_connector_requests_limited_total{limit="connector"}"#] == 0)
        // Another workload is served meanwhile.
        #expect(try Curl.request("GET", "\(base)/plain/app/manifests/v1", token: otherToken).status == 200)

        // The clients leave: their places come back.
        for curl in silent {
            kill(curl.process.processIdentifier, SIGKILL)
            curl.process.waitUntilExit()
        }
        let released = ContinuousClock.now + .seconds(25)
        while try inFlight() != 0, ContinuousClock.now < released { try await Task.sleep(for: .milliseconds(20)) }
        #expect(try Curl.request("GET", "\(base)/plain/app/manifests/v1", token: token).status == 200)
        let limitedLine = try #require(try await proxy.logLine(containing: "status=429"), "no log line for the 429")
        #expect(limitedLine.contains("detail=TOOMANYREQUESTS"), "\(limitedLine)")
        #expect(limitedLine.contains("identity=builder"), "\(limitedLine)")
    }

    /// An upstream that does not answer within `--upstream-response-timeout` is a 504 in the
    /// registry's error format.
    @Test func aSilentUpstreamIs504() async throws {
        let (stub, proxy) = try await ProxyHardeningTests.proxyInFrontOfStub(extraArguments: [
            "--upstream-response-timeout", "2",
        ])
        defer { stub.stop() }
        defer { proxy.stop() }
        let base = "http://\(proxy.host)/v2/namespaces/team-a/connectors/up"
        for method in ["GET", "HEAD"] {
            let answer = try Curl.request(method, "\(base)/silent/app/manifests/v1", token: try proxy.token())
            #expect(answer.status == 504, "\(method): \(answer.status) \(answer.text)")
            if method == "GET" { #expect(answer.text.contains(#""code":"UNAVAILABLE""#), "\(answer.text)") }
        }
        let logLine = try #require(try await proxy.logLine(containing: "status=504"), "no log line for the 504")
        #expect(logLine.contains("repository=silent/app"), "\(logLine)")
        #expect(try Curl.request("GET", "\(base)/plain/app/manifests/v1", token: try proxy.token()).status == 200)
    }

    /// An upload that takes longer than `--upstream-response-timeout` is not cut off: the time
    /// the upstream may take is counted once it has the whole body.
    @Test func anUploadSlowerThanTheResponseTimeoutCompletes() async throws {
        let registry = try await SharedRegistries.shared.anonymous()
        let proxy = try await ProxyProcess.start(
            binDirectory: Tool.binDirectory, connectorsYAML: ConnectorYAML.connector(name: "up", address: registry.url),
            extraArguments: ["--upstream-response-timeout", "1"])
        defer { proxy.stop() }
        let directory = try Loopback.temporaryDirectory("slow-upload")
        defer { try? FileManager.default.removeItem(at: directory) }
        let (file, digest) = try randomBlob(mebibytes: 3, in: directory)
        let base = "http://\(proxy.host)/v2/namespaces/team-a/connectors/up/slow/upload"
        let start = try Curl.request("POST", "\(base)/blobs/uploads/", token: try proxy.token())
        let location = try #require(start.header("Location"), "no upload location: \(start.status)")
        let url = (location.hasPrefix("http") ? location : "http://\(proxy.host)\(location)")
        // At most 1 MiB/s (curl holds it to that): three times the upstream's answer timeout.
        let output = try runCommand(
            "/usr/bin/curl",
            [
                "-s", "-o", "/dev/null", "-w", "%{http_code}", "--limit-rate", "1M", "-u", "w:\(try proxy.token())",
                "-X", "PUT", "-H", "Content-Type: application/octet-stream", "--data-binary", "@\(file.path)",
                url + (url.contains("?") ? "&" : "?") + "digest=\(digest)",
            ])
        #expect(output == "201", "the slow upload was answered \(output)")
        let head = try Curl.request("HEAD", "\(base)/blobs/\(digest)", token: try proxy.token())
        #expect(head.status == 200)
        #expect(head.header("Content-Length") == "\(3 << 20)")
    }

    /// A push whose body stops arriving is answered `408` after `--body-timeout`, and its
    /// connection closes; nothing of it lands in the registry and the proxy serves on.
    @Test func aBodyThatStopsArrivingIs408() async throws {
        let registry = try await SharedRegistries.shared.anonymous()
        let proxy = try await ProxyProcess.start(
            binDirectory: Tool.binDirectory, connectorsYAML: ConnectorYAML.connector(name: "up", address: registry.url),
            extraArguments: ["--body-timeout", "1"])
        defer { proxy.stop() }
        let token = try proxy.token()
        let digest = "sha256:" + String(repeating: "0", count: 64)
        let path = "/v2/namespaces/team-a/connectors/up/stalled/app/blobs/uploads/?digest=\(digest)"
        let stalled = try ProxyHardeningTests.hostile(["stalled-body", "\(proxy.port)", path], input: token)
        #expect(ProxyHardeningTests.statuses(stalled) == [408], "\(stalled)")
        #expect(stalled["closed"] as? Bool == true)
        #expect((stalled["body"] as? String)?.contains("the request body stopped arriving for 1 s") == true, "\(stalled)")
        let logLine = try #require(try await proxy.logLine(containing: "status=408"), "no log line for the 408")
        #expect(logLine.contains("repository=stalled/app"), "\(logLine)")
        let head = try Curl.request(
            "HEAD", "http://\(proxy.host)/v2/namespaces/team-a/connectors/up/stalled/app/blobs/\(digest)", token: token)
        #expect(head.status == 404)
        #expect(try Curl.request("GET", "http://\(proxy.host)/v2/", token: token).status == 200)
    }
}

/// Clients that go away in the middle of what they asked for, hundreds of times over.
@Suite("oci-connector-proxy when clients leave")
struct ClientsLeavingTests {
    /// Downloads and uploads abandoned mid-body (half of them with a reset): the proxy lets go of
    /// the client connection and cancels the upstream side of each, so its connections and
    /// descriptors return to where they were, and its memory stays bounded.
    @Test func hundredsOfAbandonedTransfersLeaveNothingBehind() async throws {
        let registry = try await SharedRegistries.shared.anonymous()
        let proxy = try await ProxyProcess.start(
            binDirectory: Tool.binDirectory, connectorsYAML: ConnectorYAML.connector(name: "up", address: registry.url),
            extraArguments: ["--admin-listen", "127.0.0.1:0"])
        defer { proxy.stop() }
        let token = try proxy.token()
        let base = "http://\(proxy.host)/v2/namespaces/team-a/connectors/up/abandon/app"
        // A 16 MiB blob: a read of it is far from its end when the client leaves.
        let directory = try Loopback.temporaryDirectory("abandon")
        defer { try? FileManager.default.removeItem(at: directory) }
        let (file, digest) = try randomBlob(mebibytes: 16, in: directory)
        let start = try Curl.request("POST", "\(base)/blobs/uploads/", token: token)
        let location = try #require(start.header("Location"))
        let url = location.hasPrefix("http") ? location : "http://\(proxy.host)\(location)"
        let put = try Curl.request("PUT", url + (url.contains("?") ? "&" : "?") + "digest=\(digest)", token: token, upload: file)
        try #require(put.status == 201, "the blob was not pushed: \(put.status)")
        // One whole read first, so that the connection pools hold what they hold at rest.
        let whole = try Curl.request(
            "GET", "\(base)/blobs/\(digest)", token: token, output: directory.appendingPathComponent("out"))
        #expect(whole.status == 200)
        let (descriptorsBefore, residentBefore) = (proxy.openDescriptors, ProxyHardeningTests.residentKiB(proxy))

        let path = "/v2/namespaces/team-a/connectors/up/abandon/app/blobs/\(digest)"
        let downloads = try ProxyHardeningTests.hostile(["abandon-downloads", "\(proxy.port)", path, "300"], input: token)
        #expect(downloads["begun"] as? Int == 300, "\(downloads)")
        let uploads = try ProxyHardeningTests.hostile(
            ["abandon-uploads", "\(proxy.port)", "/v2/namespaces/team-a/connectors/up/abandon/app", "100"], input: token)
        #expect(uploads["started"] as? Int == 100, "\(uploads)")
        let residentPeak = proxy.peakResidentKiB ?? 0

        // What the proxy held for them goes, as each departure is noticed.
        // Requests under way count each exchange and the task it runs upstream, to their end.
        let metrics = "http://127.0.0.1:\(try #require(proxy.adminPort))/metrics"
        var clientConnections = -1
        var descriptorsAfter = Int.max
        var inFlight: Double?
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            clientConnections = proxy.connections.filter { $0.local == proxy.port }.count
            descriptorsAfter = proxy.openDescriptors
            inFlight = ProxyOperationsTests.samples(try Curl.request("GET", metrics).text)["oci_connector_requests_in_flight"]
            if clientConnections == 0, descriptorsAfter <= descriptorsBefore + 4, inFlight == 0 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        let upstreamConnections = proxy.connections.filter { $0.remote == registry.port }.count
        print(
            "abandoned 300 downloads and 100 uploads: descriptors \(descriptorsBefore) → \(descriptorsAfter), "
                + "requests in flight \(inFlight ?? -1), "
                + "upstream connections \(upstreamConnections), resident \(residentBefore / 1024) MiB → peak \(residentPeak / 1024) MiB"
        )
        #expect(clientConnections == 0, "client connections left open")
        #expect(inFlight == 0, "requests left under way: \(inFlight ?? -1)")
        #expect(descriptorsAfter <= descriptorsBefore + 4, "descriptors \(descriptorsBefore) → \(descriptorsAfter)")
        #expect(upstreamConnections <= 4, "upstream connections kept: \(upstreamConnections)")
        #expect(residentPeak - residentBefore < 64 * 1024, "memory grew from \(residentBefore) to \(residentPeak) KiB")
        // And it serves on.
        #expect(try Curl.request("HEAD", "\(base)/blobs/\(digest)", token: token).status == 200)
    }
}

/// An upstream's token server that fails or stalls.
@Suite("oci-connector-proxy when the token server fails")
struct TokenServerOutageTests {
    /// A failing token server is a 502 and a silent one a 504, in the registry's error format;
    /// tokens the proxy holds keep serving meanwhile, and once the server is back the proxy
    /// recovers by itself, without a restart.
    @Test func tokensHeldServeAndTheProxyRecoversByItself() async throws {
        let (registry, issuer) = try await TokenAuthRegistry.start()
        defer { registry.stop() }
        defer { issuer.stop() }
        for repository in ["outage/held", "outage/new", "outage/later"] {
            try Seeder.push(
                TestImage(layerSize: 1024, seed: 4), to: registry, repository: repository, tag: "v1",
                user: SharedRegistries.robotUser, issuer: issuer)
        }
        let proxy = try await ProxyProcess.start(
            binDirectory: Tool.binDirectory,
            connectorsYAML: ConnectorYAML.connector(
                name: "reg", address: registry.url, username: SharedRegistries.robotUser.0,
                password: SharedRegistries.robotUser.1),
            extraArguments: ["--upstream-response-timeout", "2"])
        defer { proxy.stop() }
        let token = try proxy.token(connector: "team-a/reg")
        func manifest(_ repository: String) throws -> Curl.Response {
            try Curl.request(
                "GET", "http://\(proxy.host)/v2/namespaces/team-a/connectors/reg/\(repository)/manifests/v1",
                headers: ["Accept": "application/vnd.oci.image.manifest.v1+json"], token: token)
        }
        #expect(try manifest("outage/held").status == 200)

        issuer.setOutage(.failing)
        #expect(try manifest("outage/held").status == 200, "a token held did not serve while its server failed")
        let failing = try manifest("outage/new")
        #expect(failing.status == 502, "\(failing.status) \(failing.text)")
        #expect(failing.text.contains(#""code":"UNAVAILABLE""#), "\(failing.text)")

        issuer.setOutage(.silent)
        let silent = try manifest("outage/later")
        #expect(silent.status == 504, "\(silent.status) \(silent.text)")
        #expect(silent.text.contains("did not answer in time"), "\(silent.text)")
        #expect(try manifest("outage/held").status == 200)

        issuer.setOutage(nil)
        #expect(try manifest("outage/new").status == 200, "the proxy did not recover")
        #expect(try manifest("outage/later").status == 200, "the proxy did not recover")
        #expect(proxy.isRunning)
    }
}

/// Whether the load tests run: they take the machine's cores for a while, which would starve
/// the timing of tests running beside them, so CI runs them in a pass of their own.
let loadTestsEnabled = ProcessInfo.processInfo.environment["OCI_CONNECTOR_LOAD"] == "1"

/// Many clients holding connections open (`OCI_CONNECTOR_LOAD=1`).
@Suite("oci-connector-proxy with many idle connections", .enabled(if: loadTestsEnabled))
struct IdleConnectionsTests {
    /// 2000 keep-alive connections held idle, by a proxy started with a soft limit of 256 open
    /// files (as container runtimes may start it): it raises the limit itself, serves every one
    /// of them and, meanwhile, a normal client.
    @Test func twoThousandIdleConnectionsAndANormalClient() async throws {
        let registry = try await SharedRegistries.shared.anonymous()
        let proxy = try await ProxyProcess.start(
            binDirectory: Tool.binDirectory, connectorsYAML: ConnectorYAML.connector(name: "up", address: registry.url),
            softOpenFileLimit: 256)
        defer { proxy.stop() }
        let limits = try String(contentsOfFile: "/proc/\(proxy.processIdentifier)/limits", encoding: .utf8)
        let openFiles = try #require(limits.split(separator: "\n").first { $0.hasPrefix("Max open files") })
        let fields = openFiles.split(separator: " ", omittingEmptySubsequences: true)
        #expect(fields.count >= 5 && fields[3] == fields[4], "the soft limit was not raised: \(openFiles)")

        let result = try ProxyHardeningTests.hostile(
            ["hold-idle", "\(proxy.port)", "2000", "\(proxy.processIdentifier)"], input: try proxy.token())
        let statuses = result["statuses"] as? [Int] ?? []
        let (before, held) = (result["resident_before_kib"] as? Int ?? 0, result["resident_held_kib"] as? Int ?? 0)
        print(
            "2000 idle connections: \(result["answered"] ?? "?") answered, \(result["still_open"] ?? "?") still open, "
                + "resident \(before / 1024) → \(held / 1024) MiB (\((held - before) * 1024 / 2000) bytes each); "
                + "normal client p50 \(result["latency_ms_p50"] ?? "?") ms, max \(result["latency_ms_max"] ?? "?") ms")
        #expect(result["answered"] as? Int == 2000, "\(result)")
        #expect(result["still_open"] as? Int == 2000, "\(result)")
        #expect(statuses.count == 50 && statuses.allSatisfy { $0 == 200 }, "\(statuses)")
    }
}

/// Many clients at once (`OCI_CONNECTOR_LOAD=1`).
@Suite("oci-connector-proxy under load", .enabled(if: loadTestsEnabled))
struct LoadTests {
    /// 200 clients, half pulling (manifest and blob, digest checked) and half pushing fresh blobs,
    /// for `OCI_CONNECTOR_LOAD_SECONDS` (30 by default; 60 is the long run): not one error, and
    /// the proxy's memory bounded.
    @Test func twoHundredClientsPullingAndPushingWithoutAnError() async throws {
        let seconds = ProcessInfo.processInfo.environment["OCI_CONNECTOR_LOAD_SECONDS"] ?? "30"
        let registry = try await SharedRegistries.shared.anonymous()
        let image = TestImage(layerSize: 1 << 20, seed: 7)
        try Seeder.push(image, to: registry, repository: "load/app", tag: "v1")
        let proxy = try await ProxyProcess.start(
            binDirectory: Tool.binDirectory, connectorsYAML: ConnectorYAML.connector(name: "up", address: registry.url))
        defer { proxy.stop() }
        let output = try runCommand(
            "/usr/bin/env",
            [
                "python3", ProxyHardeningTests.scripts.appendingPathComponent("load.py").path, "\(proxy.port)",
                "/v2/namespaces/team-a/connectors/up/load/app", "200", seconds, "\(proxy.processIdentifier)", "v1",
                sha256Digest(image.layer),
            ], input: try proxy.token())
        let result = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any] ?? [:]
        let (pulls, pushes, errors) = (
            result["pulls"] as? Int ?? 0, result["pushes"] as? Int ?? 0, result["errors"] as? Int ?? -1
        )
        let (before, peak) = (result["resident_before_kib"] as? Int ?? 0, result["resident_peak_kib"] as? Int ?? 0)
        print(
            "load, 200 clients for \(seconds) s: \(pulls) pulls of 1 MiB, \(pushes) pushes of 64 KiB, \(errors) errors; "
                + "proxy resident \(before / 1024) → peak \(peak / 1024) MiB")
        #expect(errors == 0, "\(result["failures"] ?? [])")
        #expect(pulls > 0 && pushes > 0)
        #expect(peak - before < 256 * 1024, "the proxy's memory grew from \(before) to \(peak) KiB")
        #expect(proxy.isRunning)
    }
}
