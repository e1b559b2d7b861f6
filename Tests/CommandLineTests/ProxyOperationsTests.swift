import Foundation
import OCITestSupport
import Testing

/// The proxy as platform teams run it: probed by Kubernetes and scraped by Prometheus on a
/// listener of its own, and stopped with SIGTERM in the middle of a pull.
@Suite("oci-connector-proxy operations", .serialized)
struct ProxyOperationsTests {
    /// The samples of a Prometheus text exposition: `name{labels}` → value.
    static func samples(_ text: String) -> [String: Double] {
        var samples: [String: Double] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            samples[String(line[..<space])] = value
        }
        return samples
    }

    static func scrape(_ proxy: ProxyProcess) throws -> (text: String, samples: [String: Double]) {
        let response = try Curl.request("GET", "http://127.0.0.1:\(try #require(proxy.adminPort))/metrics")
        #expect(response.status == 200)
        #expect(response.header("Content-Type")?.hasPrefix("text/plain; version=0.0.4") == true)
        return (response.text, samples(response.text))
    }

    /// Probes answer without a token, and the counters match the requests made: by connector,
    /// method, endpoint kind and status class; client token refusals by reason; upstream token
    /// requests as the token server counted them. No secret, repository or unknown name shows.
    @Test func probesAndMetricsOnTheAdminListener() async throws {
        let (registry, issuer) = try await TokenAuthRegistry.start()
        defer { registry.stop() }
        let repository = "metrics-\(UInt32.random(in: 0...UInt32.max))/app"
        let image = TestImage(layerSize: 2048, seed: 9)
        try Seeder.push(image, to: registry, repository: repository, tag: "v1", user: SharedRegistries.robotUser, issuer: issuer)
        let robotPassword = SharedRegistries.robotUser.1
        let proxy = try await ProxyProcess.start(
            binDirectory: Tool.binDirectory,
            connectorsYAML: ConnectorYAML.connector(
                name: "reg", address: registry.url, username: SharedRegistries.robotUser.0, password: robotPassword),
            extraArguments: ["--admin-listen", "127.0.0.1:0"])
        defer { proxy.stop() }
        let admin = "http://127.0.0.1:\(try #require(proxy.adminPort))"

        let health = try Curl.request("GET", "\(admin)/healthz")
        #expect(health.status == 200 && health.text == "ok\n")
        let ready = try Curl.request("GET", "\(admin)/readyz")
        #expect(ready.status == 200 && ready.text == "ready\n")
        #expect(try Curl.request("HEAD", "\(admin)/readyz").status == 200)
        #expect(try Curl.request("POST", "\(admin)/metrics").status == 405)
        #expect(try Curl.request("GET", "\(admin)/v2/").status == 404)
        // The data port serves the registry API only.
        #expect(try Curl.request("GET", "http://\(proxy.host)/metrics").status != 200)

        let token = try proxy.token(connector: "team-a/reg", actions: "pull")
        let base = "http://\(proxy.host)/v2/namespaces/team-a/connectors/reg/\(repository)"
        let accept = ["Accept": TestImage.manifestMediaType]
        for _ in 0..<5 {
            let response = try Curl.request("GET", "\(base)/manifests/v1", headers: accept, token: token)
            #expect(response.status == 200)
        }
        for _ in 0..<3 {
            #expect(try Curl.request("HEAD", "\(base)/blobs/\(sha256Digest(image.layer))", token: token).status == 200)
        }
        #expect(try Curl.request("GET", "\(base)/manifests/v1").status == 401)
        #expect(try Curl.request("GET", "\(base)/manifests/v1", headers: ["Authorization": "Digest x"]).status == 401)
        #expect(try Curl.request("GET", "\(base)/manifests/v1", token: "not-a-token").status == 401)
        #expect(try Curl.request("DELETE", "\(base)/manifests/v1", token: token).status == 403)
        let unknown = "http://\(proxy.host)/v2/namespaces/team-z/connectors/secret-name/\(repository)/manifests/v1"
        #expect(try Curl.request("GET", unknown, token: token).status == 403)

        // Each request is counted when its log line is written, after its answer.
        var scraped = try Self.scrape(proxy)
        for _ in 0..<100 where scraped.samples["oci_connector_requests_in_flight"] != 0 {
            try await Task.sleep(for: .milliseconds(50))
            scraped = try Self.scrape(proxy)
        }
        let samples = scraped.samples
        let connector = #"connector="team-a/reg""#
        #expect(samples[#"oci_connector_requests_total{\#(connector),method="GET",endpoint="manifests",status="2xx"}"#] == 5)
        #expect(samples[#"oci_connector_requests_total{\#(connector),method="HEAD",endpoint="blobs",status="2xx"}"#] == 3)
        #expect(samples[#"oci_connector_requests_total{\#(connector),method="GET",endpoint="manifests",status="4xx"}"#] == 3)
        #expect(samples[#"oci_connector_requests_total{\#(connector),method="DELETE",endpoint="manifests",status="4xx"}"#] == 1)
        #expect(samples[#"oci_connector_requests_total{connector="-",method="GET",endpoint="manifests",status="4xx"}"#] == 1)
        #expect(samples[#"oci_connector_client_tokens_total{result="accepted",reason="-"}"#] == 10)
        #expect(samples[#"oci_connector_client_tokens_total{result="refused",reason="missing"}"#] == 1)
        #expect(samples[#"oci_connector_client_tokens_total{result="refused",reason="scheme"}"#] == 1)
        #expect(samples[#"oci_connector_client_tokens_total{result="refused",reason="invalid"}"#] == 1)
        #expect(samples[#"oci_connector_client_tokens_total{result="refused",reason="denied"}"#] == 2)
        #expect(
            samples[#"oci_connector_request_bytes_total{\#(connector),direction="out"}"#] ?? 0 >= Double(5 * image.manifest.count)
        )
        // Every read that reached the upstream took one answer from it; every token came from
        // the token server, and the rest of the reads were served from the cache.
        #expect(samples[#"oci_connector_upstream_response_seconds_count{\#(connector)}"#] == 8)
        let tokenRequests = samples[#"oci_connector_upstream_token_requests_total{\#(connector),result="ok"}"#] ?? 0
        #expect(tokenRequests >= 1 && tokenRequests == Double(issuer.counts.total - 1), "\(issuer.counts)")  // 1: the seeder's
        #expect(samples[#"oci_connector_upstream_token_cache_hits_total{\#(connector)}"#] ?? 0 >= 8 - tokenRequests)
        for _ in 0..<100 where Self.samples(try Self.scrape(proxy).text)["oci_connector_connections"] != 0 {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(Self.samples(try Self.scrape(proxy).text)["oci_connector_connections"] == 0)

        for secret in [token, robotPassword, repository, "secret-name", "team-z"] {
            #expect(!scraped.text.contains(secret), "the metrics show \(secret)")
        }
    }

    /// SIGTERM in the middle of a pull: readiness fails at once (the Service stops sending new
    /// clients), the pull finishes whole, and the proxy exits 0 after it.
    @Test func sigtermFailsReadinessAndLetsThePullFinish() async throws {
        let registry = try await SharedRegistries.shared.anonymous()
        let repository = "drain-\(UInt32.random(in: 0...UInt32.max))/app"
        let image = TestImage(layerSize: 16 << 20, seed: 4)
        try Seeder.push(image, to: registry, repository: repository, tag: "v1")
        let proxy = try await ProxyProcess.start(
            binDirectory: Tool.binDirectory, connectorsYAML: ConnectorYAML.connector(name: "reg", address: registry.url),
            extraArguments: ["--admin-listen", "127.0.0.1:0"])
        defer { proxy.stop() }
        let admin = "http://127.0.0.1:\(try #require(proxy.adminPort))"
        let url =
            "http://\(proxy.host)/v2/namespaces/team-a/connectors/reg/\(repository)/blobs/\(sha256Digest(image.layer))"
        // 16 MiB at 2 MiB/s: eight seconds, far more than the socket buffers hold.
        let curl = try ProxyStreamingTests.startCurl([
            "--limit-rate", "2M", "-u", "w:\(try proxy.token(connector: "team-a/reg", actions: "pull"))", "-o", "/dev/null",
            "-w", "%{http_code} %{size_download}", url,
        ])
        try #require(
            try await proxy.waitForConnection(toPort: registry.port), "the pull did not reach the registry")
        proxy.terminate()
        var readiness = try Curl.request("GET", "\(admin)/readyz")
        for _ in 0..<50 where readiness.status == 200 {
            try await Task.sleep(for: .milliseconds(20))
            readiness = try Curl.request("GET", "\(admin)/readyz")
        }
        #expect(readiness.status == 503 && readiness.text.contains("draining"), "\(readiness.status) \(readiness.text)")
        #expect(try Curl.request("GET", "\(admin)/healthz").status == 200)
        #expect(curl.output() == "200 \(image.layer.count)")
        for _ in 0..<100 where proxy.isRunning { try await Task.sleep(for: .milliseconds(50)) }
        #expect(!proxy.isRunning, "the proxy did not stop after its last response")
        #expect(proxy.terminationStatus == 0)
    }

    /// A transfer longer than `--shutdown-grace` does not hold the rollout: the proxy exits 0 when
    /// the grace period ends, and the client sees its transfer cut short, not complete.
    @Test func theShutdownGraceBoundsTheDrain() async throws {
        let registry = try await SharedRegistries.shared.anonymous()
        let repository = "grace-\(UInt32.random(in: 0...UInt32.max))/app"
        let image = TestImage(layerSize: 32 << 20, seed: 6)
        try Seeder.push(image, to: registry, repository: repository, tag: "v1")
        let proxy = try await ProxyProcess.start(
            binDirectory: Tool.binDirectory, connectorsYAML: ConnectorYAML.connector(name: "reg", address: registry.url),
            extraArguments: ["--shutdown-grace", "0.5"])
        defer { proxy.stop() }
        let url =
            "http://\(proxy.host)/v2/namespaces/team-a/connectors/reg/\(repository)/blobs/\(sha256Digest(image.layer))"
        // 32 MiB at 1 MiB/s: half a minute, far beyond the grace period and what socket buffers hold.
        let curl = try ProxyStreamingTests.startCurl([
            "--limit-rate", "1M", "-u", "w:\(try proxy.token(connector: "team-a/reg", actions: "pull"))", "-o",
            "/dev/null", "-w", "%{http_code} %{size_download}", url,
        ])
        try #require(try await proxy.waitForConnection(toPort: registry.port), "the pull did not reach the registry")
        let stopped = ContinuousClock.now
        proxy.terminate()
        for _ in 0..<100 where proxy.isRunning { try await Task.sleep(for: .milliseconds(50)) }
        #expect(!proxy.isRunning, "the proxy outlived its grace period by seconds")
        #expect(proxy.terminationStatus == 0)
        let output = curl.output()
        #expect(ContinuousClock.now - stopped < .seconds(10), "curl waited for the whole blob")
        #expect(output.hasPrefix("200 ") && output != "200 \(image.layer.count)", "\(output)")
        #expect(curl.process.terminationStatus != 0, "curl took a cut transfer for a whole one")
        let log = try String(contentsOf: proxy.logFile, encoding: .utf8)
        #expect(log.contains("answers still under way after the shutdown grace period"))
    }

    /// `--log-format json`: every line is one JSON object; a request's names who asked (the
    /// token's subject, from which address), what (action, repository, reference) and how it
    /// went, numbers as numbers, and never the token.
    @Test func requestLogsAsJSON() async throws {
        let registry = try await SharedRegistries.shared.anonymous()
        let repository = "json-\(UInt32.random(in: 0...UInt32.max))/app"
        let image = TestImage(layerSize: 1024, seed: 5)
        try Seeder.push(image, to: registry, repository: repository, tag: "v1")
        let proxy = try await ProxyProcess.start(
            binDirectory: Tool.binDirectory, connectorsYAML: ConnectorYAML.connector(name: "reg", address: registry.url),
            extraArguments: ["--log-format", "json"])
        defer { proxy.stop() }
        let token = try proxy.token(connector: "team-a/reg", actions: "pull")
        let base = "http://\(proxy.host)/v2/namespaces/team-a/connectors/reg/\(repository)"
        let pulled = try Curl.request(
            "GET", "\(base)/manifests/v1", headers: ["Accept": TestImage.manifestMediaType], token: token)
        #expect(pulled.status == 200)
        #expect(try Curl.request("PUT", "\(base)/manifests/v2", token: token).status == 403)

        // A request's line is written once its answer has ended.
        _ = try #require(try await proxy.logLine(containing: #""status":403"#), "no line for the refused push")
        let lines = try String(contentsOf: proxy.logFile, encoding: .utf8).split(separator: "\n")
        var requests: [[String: Any]] = []
        for text in lines {
            let object = try #require(
                try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], "not a JSON object: \(text)")
            #expect(object["time"] is String && object["level"] is String && object["message"] is String)
            if object["message"] as? String == "request" { requests.append(object) }
        }
        let pull = try #require(requests.first { $0["status"] as? Int == 200 })
        #expect(pull["identity"] as? String == "workload")
        #expect((pull["client"] as? String)?.hasPrefix("127.0.0.1:") == true)
        #expect(pull["action"] as? String == "pull")
        #expect(pull["connector"] as? String == "team-a/reg")
        #expect(pull["repository"] as? String == repository)
        #expect(pull["reference"] as? String == "v1")
        #expect(pull["bytes_out"] as? Int == image.manifest.count)
        #expect(pull["duration_ms"] is Int && pull["upstream_ms"] is Int)
        let push = try #require(requests.first { $0["status"] as? Int == 403 })
        #expect(push["action"] as? String == "push" && push["reference"] as? String == "v2")
        let log = try String(contentsOf: proxy.logFile, encoding: .utf8)
        #expect(!log.contains(token) && !log.contains(String(token.split(separator: ".")[2])))
    }

    @Test func theAdminListenerNeedsAPortOfItsOwn() throws {
        let same = try Tool.run(
            "oci-connector-proxy", "--connectors", "/dev/null", "--token-keys", "/dev/null", "--listen", "127.0.0.1:9000",
            "--admin-listen", "127.0.0.1:9000")
        #expect(same.status != 0 && same.stderr.contains("--admin-listen must differ from --listen"), "\(same.stderr)")
        let malformed = try Tool.run(
            "oci-connector-proxy", "--connectors", "/dev/null", "--token-keys", "/dev/null", "--admin-listen", "9090")
        #expect(malformed.status != 0 && malformed.stderr.contains("--admin-listen must be HOST:PORT"), "\(malformed.stderr)")
    }
}
