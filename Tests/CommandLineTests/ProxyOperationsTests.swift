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

    /// SIGTERM while a pull is under way: readiness fails at once (the Service stops sending new
    /// clients) while liveness holds; the pull is not cut at once, but the drain lasts no longer
    /// than `--shutdown-grace`: then the proxy exits 0 and the client sees a cut transfer, never a
    /// complete-looking one. (Pulls that end within the grace period finish whole:
    /// `readsUnderWayFinishOnSIGTERM`.)
    @Test func sigtermFailsReadinessAndTheGraceBoundsTheDrain() async throws {
        let stub = try await StubUpstream.start()
        defer { stub.stop() }
        let proxy = try await ProxyProcess.start(
            binDirectory: Tool.binDirectory,
            connectorsYAML: ConnectorYAML.connector(
                name: "up", address: stub.url, username: "stub-user", password: "stub-secret"),
            extraArguments: ["--admin-listen", "127.0.0.1:0", "--shutdown-grace", "2"])
        defer { proxy.stop() }
        let admin = "http://127.0.0.1:\(try #require(proxy.adminPort))"
        // A 4 GiB body, read by a client that takes 2 MiB a second: the drain cannot end by itself.
        let url = "http://\(proxy.host)/v2/namespaces/team-a/connectors/up/endless/app/blobs/\(ProxyStreamingTests.digest)"
        let curl = try ProxyStreamingTests.startCurl([
            "--limit-rate", "2M", "-u", "w:\(try proxy.token())", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", url,
        ])
        for _ in 0..<200 where stub.endlessStream.written == 0 { try await Task.sleep(for: .milliseconds(25)) }
        try #require(stub.endlessStream.written > 0, "the pull did not start")
        proxy.terminate()
        var readiness = try Curl.request("GET", "\(admin)/readyz")
        for _ in 0..<50 where readiness.status == 200 {
            try await Task.sleep(for: .milliseconds(20))
            readiness = try Curl.request("GET", "\(admin)/readyz")
        }
        #expect(readiness.status == 503 && readiness.text.contains("draining"), "\(readiness.status) \(readiness.text)")
        #expect(try Curl.request("GET", "\(admin)/healthz").status == 200)
        #expect(proxy.isRunning, "the proxy did not wait for the pull under way")

        let status = try await proxy.exitStatus(within: .seconds(30))
        #expect(status == 0, "the proxy outlived its grace period, or failed (exit status \(String(describing: status)))")
        let output = curl.output()
        #expect(output.hasPrefix("200 ") && output != "200 \(4 << 30)", "\(output)")
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

    /// A signing and a verification key, written by `oci-connector-config keys generate` into
    /// `directory`, which is returned.
    static func generateKeys(in directory: URL) throws -> URL {
        _ = try runCommand(
            Tool.binDirectory.appendingPathComponent("oci-connector-config").path, ["keys", "generate", "--out", directory.path])
        return directory
    }

    /// A self-signed certificate for 127.0.0.1, which is its own CA, in `directory`.
    static func certificate(in directory: URL, name: String) throws -> (certificate: URL, key: URL) {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let (certificate, key) = (directory.appendingPathComponent("tls.crt"), directory.appendingPathComponent("tls.key"))
        try runCommand(
            "/usr/bin/openssl",
            [
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key.path,
                "-out", certificate.path, "-days", "2", "-subj", "/CN=\(name)", "-addext", "subjectAltName=IP:127.0.0.1",
            ])
        return (certificate, key)
    }

    /// Points the `..data` link of a Secret-like mount at `version`, in one rename, as kubelet does.
    static func swapData(in mount: URL, to version: String) throws {
        let staging = mount.appendingPathComponent("..data_tmp")
        try? FileManager.default.removeItem(at: staging)
        try FileManager.default.createSymbolicLink(atPath: staging.path, withDestinationPath: version)
        guard rename(staging.path, mount.appendingPathComponent("..data").path) == 0 else {
            throw TestSupportError("cannot swap ..data")
        }
    }

    /// HTTPS on the data port from a Kubernetes-style Secret mount: curl and skopeo trusting the
    /// test CA pull and push (upload locations come back `https://`), plain HTTP is refused
    /// without harm, a rotated certificate serves new connections without a restart, and a broken
    /// one leaves the last good certificate serving.
    @Test func tlsListenerServesAndReloadsItsCertificate() async throws {
        let registry = try await SharedRegistries.shared.anonymous()
        let repository = "tls-\(UInt32.random(in: 0...UInt32.max))/app"
        try Seeder.push(TestImage(layerSize: 4096, seed: 7), to: registry, repository: repository, tag: "v1")
        let mount = try Loopback.temporaryDirectory("tls-mount")
        let first = try Self.certificate(in: mount.appendingPathComponent("..2026_12_05_a"), name: "first")
        try Self.swapData(in: mount, to: "..2026_12_05_a")
        for file in ["tls.crt", "tls.key"] {
            try FileManager.default.createSymbolicLink(
                atPath: mount.appendingPathComponent(file).path, withDestinationPath: "..data/\(file)")
        }
        let proxy = try await ProxyProcess.start(
            binDirectory: Tool.binDirectory, connectorsYAML: ConnectorYAML.connector(name: "reg", address: registry.url),
            extraArguments: [
                "--tls-cert", mount.appendingPathComponent("tls.crt").path, "--tls-key",
                mount.appendingPathComponent("tls.key").path,
            ])
        defer { proxy.stop() }
        let token = try proxy.token(connector: "team-a/reg")
        let base = "https://\(proxy.host)/v2/namespaces/team-a/connectors/reg"
        func status(trusting authority: URL) throws -> Int {
            let code = try? runCommand(
                "/usr/bin/curl",
                ["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", authority.path, "-u", "w:\(token)", "\(base)/"])
            return Int(code ?? "") ?? 0
        }
        #expect(try status(trusting: first.certificate) == 200)

        // skopeo with the CA in a certificate directory, verifying: a pull and a push.
        let certificates = try Loopback.temporaryDirectory("skopeo-certs")
        try FileManager.default.copyItem(at: first.certificate, to: certificates.appendingPathComponent("ca.crt"))
        let prefix = "\(proxy.host)/namespaces/team-a/connectors/reg"
        _ = try runCommand(
            "/usr/bin/skopeo",
            [
                "copy", "--src-cert-dir", certificates.path, "--dest-cert-dir", certificates.path, "--src-creds",
                "w:\(token)", "--dest-creds", "w:\(token)", "docker://\(prefix)/\(repository):v1",
                "docker://\(prefix)/\(repository)-copy:v1",
            ])
        let upload = try runCommand(
            "/usr/bin/curl",
            [
                "-s", "-D", "-", "-o", "/dev/null", "-X", "POST", "--cacert", first.certificate.path, "-u", "w:\(token)",
                "\(base)/\(repository)/blobs/uploads/",
            ])
        #expect(upload.contains("Location: https://\(proxy.host)/v2/namespaces/team-a/connectors/reg/"), "\(upload)")

        // Plain HTTP on the TLS port: no answer, and the proxy goes on.
        let plain = try? runCommand("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "http://\(proxy.host)/v2/"])
        #expect(plain == nil || plain != "200")
        #expect(try status(trusting: first.certificate) == 200)

        // kubelet swaps the Secret's `..data` link: new connections get the new certificate.
        let second = try Self.certificate(in: mount.appendingPathComponent("..2026_12_05_b"), name: "second")
        try Self.swapData(in: mount, to: "..2026_12_05_b")
        var rotated = try status(trusting: second.certificate)
        for _ in 0..<100 where rotated != 200 {
            try await Task.sleep(for: .milliseconds(100))
            rotated = try status(trusting: second.certificate)
        }
        #expect(rotated == 200, "the rotated certificate is not served")
        #expect(try status(trusting: first.certificate) == 0, "the old certificate is still served")

        // A broken pair (a key that is not the certificate's) keeps the last good one.
        let third = mount.appendingPathComponent("..2026_12_05_c")
        try FileManager.default.createDirectory(at: third, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: first.certificate, to: third.appendingPathComponent("tls.crt"))
        try FileManager.default.copyItem(at: second.key, to: third.appendingPathComponent("tls.key"))
        try Self.swapData(in: mount, to: "..2026_12_05_c")
        // New connections look at the files (at most once a second).
        var reported = false
        for _ in 0..<50 where !reported {
            #expect(try status(trusting: second.certificate) == 200)
            try await Task.sleep(for: .milliseconds(100))
            reported = try String(contentsOf: proxy.logFile, encoding: .utf8).contains("TLS certificate not reloaded")
        }
        #expect(reported, "the broken pair was not reported")
        #expect(try status(trusting: second.certificate) == 200)
        #expect(proxy.isRunning)
        let log = try String(contentsOf: proxy.logFile, encoding: .utf8)
        #expect(!log.contains("PRIVATE KEY"))
    }

    @Test func tlsFlagsAreCheckedAtStart() async throws {
        let alone = try Tool.run(
            "oci-connector-proxy", "--connectors", "/dev/null", "--token-keys", "/dev/null", "--tls-cert", "/dev/null")
        #expect(alone.status != 0 && alone.stderr.contains("--tls-cert and --tls-key go together"), "\(alone.stderr)")
        let directory = try Loopback.temporaryDirectory("tls-flags")
        let pair = try Self.certificate(in: directory, name: "flags")
        let connectors = directory.appendingPathComponent("c.yaml")
        try ConnectorYAML.connector(name: "reg", address: "http://127.0.0.1:1").write(
            to: connectors, atomically: true, encoding: .utf8)
        _ = try Self.generateKeys(in: directory.appendingPathComponent("keys"))
        let keys = directory.appendingPathComponent("keys/verification-key.jwk").path
        let swapped = try Tool.run(
            "oci-connector-proxy", "--connectors", connectors.path, "--token-keys", keys, "--listen", "127.0.0.1:0",
            "--tls-cert", pair.key.path, "--tls-key", pair.certificate.path)
        #expect(swapped.status != 0 && swapped.stderr.contains("cannot read a PEM certificate from"), "\(swapped.stderr)")
    }

    /// Sends a request on one connection, waits for `marker` to exist, sends another on the same
    /// connection, and prints both statuses (or the error that ended the connection).
    static let keepAliveScript = """
        import http.client, os, sys, time
        host, port, token, marker = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
        connection = http.client.HTTPConnection(host, port, timeout=60)
        def get():
            connection.request("GET", "/v2/", headers={"Authorization": "Bearer " + token})
            response = connection.getresponse(); response.read(); return str(response.status)
        first = get()
        while not os.path.exists(marker): time.sleep(0.02)
        try: second = get()
        except Exception as error: second = type(error).__name__
        print(first, second)
        """

    /// Connectors, their Secrets and the token keys are re-read on SIGHUP and when their files
    /// change, without dropping a connection: a fixed password works at once (the refused
    /// credentials' state is dropped), a new connector serves, a broken file keeps the last good
    /// configuration, and new keys refuse tokens of the old ones, on connections open before too.
    @Test func connectorsSecretsAndKeysReloadWithoutDroppingConnections() async throws {
        let (tokenRegistry, issuer) = try await TokenAuthRegistry.start()
        defer { tokenRegistry.stop() }
        let anonymous = try await SharedRegistries.shared.anonymous()
        let repository = "reload-\(UInt32.random(in: 0...UInt32.max))/app"
        let image = TestImage(layerSize: 1024, seed: 8)
        try Seeder.push(
            image, to: tokenRegistry, repository: repository, tag: "v1", user: SharedRegistries.robotUser, issuer: issuer)
        try Seeder.push(image, to: anonymous, repository: repository, tag: "v1")
        let robot = SharedRegistries.robotUser
        let extra = try Loopback.temporaryDirectory("reload-connectors")
        let proxy = try await ProxyProcess.start(
            binDirectory: Tool.binDirectory,
            connectorsYAML: ConnectorYAML.connector(
                name: "tok", address: tokenRegistry.url, username: robot.0, password: "an-old-password"),
            extraArguments: ["--connectors", extra.path, "--admin-listen", "127.0.0.1:0"])
        defer { proxy.stop() }
        let token = try proxy.token(connector: "team-a/tok,team-a/new", actions: "pull")
        func status(_ connector: String, token: String) throws -> Int {
            try Curl.request(
                "GET", "http://\(proxy.host)/v2/namespaces/team-a/connectors/\(connector)/\(repository)/manifests/v1",
                headers: ["Accept": TestImage.manifestMediaType], token: token
            ).status
        }
        #expect(try status("tok", token: token) == 403)
        #expect(try status("new", token: token) == 404)  // Allowed by the token, unknown to the proxy.

        // A connection opened before the reload.
        let marker = extra.appendingPathComponent(".go")
        let held = Process()
        held.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        held.arguments = ["python3", "-c", Self.keepAliveScript, "127.0.0.1", "\(proxy.port)", token, marker.path]
        let heldOutput = Pipe()
        held.standardOutput = heldOutput
        try held.run()

        // The password fixed, a connector added; SIGHUP.
        try ConnectorYAML.connector(name: "tok", address: tokenRegistry.url, username: robot.0, password: robot.1).write(
            to: proxy.directory.appendingPathComponent("connectors.yaml"), atomically: true, encoding: .utf8)
        try ConnectorYAML.connector(name: "new", address: anonymous.url).write(
            to: extra.appendingPathComponent("new.yaml"), atomically: true, encoding: .utf8)
        kill(proxy.processIdentifier, SIGHUP)
        _ = try #require(try await proxy.logLine(containing: "configuration reloaded"), "no reload")
        #expect(try status("tok", token: token) == 200)
        #expect(try status("new", token: token) == 200)
        let line = try #require(try await proxy.logLine(containing: "configuration reloaded"))
        #expect(line.contains("added=team-a/new") && line.contains("changed=team-a/tok"), "\(line)")
        #expect(!line.contains(robot.1))

        try Data().write(to: marker)
        let heldStatuses = String(decoding: heldOutput.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        held.waitUntilExit()
        #expect(heldStatuses.trimmingCharacters(in: .whitespacesAndNewlines) == "200 200", "\(heldStatuses)")

        // A broken file, noticed by the watch alone: the last good configuration keeps serving.
        try "kind: Connector\nmetadata: {name: [broken".write(
            to: extra.appendingPathComponent("broken.yaml"), atomically: true, encoding: .utf8)
        _ = try #require(
            try await proxy.logLine(containing: "configuration not reloaded", attempts: 100), "the broken file went unnoticed")
        #expect(try status("tok", token: token) == 200)
        try FileManager.default.removeItem(at: extra.appendingPathComponent("broken.yaml"))

        // New token keys: tokens signed with the old ones are refused, those with the new accepted.
        let newKeys = try Self.generateKeys(in: try Loopback.temporaryDirectory("reload-keys"))
        let verification = proxy.directory.appendingPathComponent("keys/verification-key.jwk")
        try FileManager.default.removeItem(at: verification)
        try FileManager.default.copyItem(at: newKeys.appendingPathComponent("verification-key.jwk"), to: verification)
        kill(proxy.processIdentifier, SIGHUP)
        let newToken = try proxy.token(
            connector: "team-a/tok", actions: "pull", signingKey: newKeys.appendingPathComponent("signing-key.jwk").path)
        var refreshed = try status("tok", token: newToken)
        for _ in 0..<100 where refreshed != 200 {
            try await Task.sleep(for: .milliseconds(50))
            refreshed = try status("tok", token: newToken)
        }
        #expect(refreshed == 200)
        #expect(try status("tok", token: token) == 401)

        let metrics = Self.samples(try Self.scrape(proxy).text)
        #expect(metrics[#"oci_connector_reloads_total{result="ok"}"#] ?? 0 >= 2)
        #expect(metrics[#"oci_connector_reloads_total{result="error"}"#] ?? 0 >= 1)
    }

    /// Clients reading over HTTPS keep-alive connections until `stop` exists; prints how many
    /// answers had each status (or error) as JSON.
    static let loadScript = """
        import http.client, json, os, ssl, sys, threading
        host, port, ca, stop, path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
        tokens = sys.argv[6:]
        counts, lock = {}, threading.Lock()
        def client(token):
            context = ssl.create_default_context(cafile=ca)
            connection = None
            while not os.path.exists(stop):
                try:
                    if connection is None: connection = http.client.HTTPSConnection(host, port, context=context, timeout=30)
                    connection.request("GET", path, headers={"Authorization": "Bearer " + token,
                        "Accept": "application/vnd.oci.image.manifest.v1+json"})
                    response = connection.getresponse(); response.read(); key = str(response.status)
                except Exception as error:
                    key, connection = type(error).__name__, None
                with lock: counts[key] = counts.get(key, 0) + 1
        threads = [threading.Thread(target=client, args=(tokens[i % len(tokens)],)) for i in range(4)]
        for thread in threads: thread.start()
        for thread in threads: thread.join()
        print(json.dumps(counts))
        """

    /// Every kind of file reloaded while clients keep reading, over TLS, on kept-alive and new
    /// connections: the connectors (a connector added, another's Secret changed), a second token
    /// key next to the first, and the certificate. Not one request fails.
    @Test func reloadsUnderLoadFailNoRequest() async throws {
        let registry = try await SharedRegistries.shared.anonymous()
        let repository = "load-\(UInt32.random(in: 0...UInt32.max))/app"
        try Seeder.push(TestImage(layerSize: 512, seed: 11), to: registry, repository: repository, tag: "v1")
        let directory = try Loopback.temporaryDirectory("reload-load")
        let first = try Self.certificate(in: directory.appendingPathComponent("first"), name: "first")
        let second = try Self.certificate(in: directory.appendingPathComponent("second"), name: "second")
        let tlsDirectory = directory.appendingPathComponent("tls")
        try FileManager.default.createDirectory(at: tlsDirectory, withIntermediateDirectories: true)
        for file in ["tls.crt", "tls.key"] {
            try FileManager.default.copyItem(
                at: directory.appendingPathComponent("first/\(file)"), to: tlsDirectory.appendingPathComponent(file))
        }
        // Clients trust both certificates, so the rotation is invisible to them.
        let bundle = directory.appendingPathComponent("ca.pem")
        try (try String(contentsOf: first.certificate, encoding: .utf8) + String(contentsOf: second.certificate, encoding: .utf8))
            .write(to: bundle, atomically: true, encoding: .utf8)
        let connectors = directory.appendingPathComponent("connectors")
        try FileManager.default.createDirectory(at: connectors, withIntermediateDirectories: true)
        // The token keys as a directory (the last --token-keys wins), so a second key can join.
        let keys = directory.appendingPathComponent("keys")
        let oldKeys = try Self.generateKeys(in: try Loopback.temporaryDirectory("reload-load-old-keys"))
        try FileManager.default.createDirectory(at: keys, withIntermediateDirectories: true)
        try FileManager.default.copyItem(
            at: oldKeys.appendingPathComponent("verification-key.jwk"), to: keys.appendingPathComponent("old.jwk"))
        let proxy = try await ProxyProcess.start(
            binDirectory: Tool.binDirectory, connectorsYAML: ConnectorYAML.connector(name: "reg", address: registry.url),
            extraArguments: [
                "--token-keys", keys.path, "--connectors", connectors.path, "--tls-cert",
                tlsDirectory.appendingPathComponent("tls.crt").path,
                "--tls-key", tlsDirectory.appendingPathComponent("tls.key").path, "--admin-listen", "127.0.0.1:0",
            ])
        defer { proxy.stop() }
        let token = try proxy.token(
            connector: "team-a/reg", actions: "pull", signingKey: oldKeys.appendingPathComponent("signing-key.jwk").path)
        let stop = directory.appendingPathComponent("stop")
        let load = Process()
        load.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        load.arguments = [
            "python3", "-c", Self.loadScript, "127.0.0.1", "\(proxy.port)", bundle.path, stop.path,
            "/v2/namespaces/team-a/connectors/reg/\(repository)/manifests/v1", token,
        ]
        let loadOutput = Pipe()
        load.standardOutput = loadOutput
        try load.run()
        let admin = "http://127.0.0.1:\(try #require(proxy.adminPort))"
        func reloads() throws -> Double {
            Self.samples(try Curl.request("GET", "\(admin)/metrics").text)[#"oci_connector_reloads_total{result="ok"}"#] ?? 0
        }
        func reloaded(after count: Double) async throws {
            for _ in 0..<100 where try reloads() <= count { try await Task.sleep(for: .milliseconds(50)) }
            #expect(try reloads() > count, "no reload")
        }

        // A connector added (by the watch), then another's credentials changed (SIGHUP).
        var count = try reloads()
        try ConnectorYAML.connector(name: "other", address: registry.url).write(
            to: connectors.appendingPathComponent("other.yaml"), atomically: true, encoding: .utf8)
        try await reloaded(after: count)
        count = try reloads()
        try ConnectorYAML.connector(name: "other", address: registry.url, username: "u", password: "p").write(
            to: connectors.appendingPathComponent("other.yaml"), atomically: true, encoding: .utf8)
        kill(proxy.processIdentifier, SIGHUP)
        try await reloaded(after: count)
        // A second token key next to the first: old tokens still verify, new ones too.
        count = try reloads()
        let newKeys = try Self.generateKeys(in: try Loopback.temporaryDirectory("reload-load-keys"))
        try FileManager.default.copyItem(
            at: newKeys.appendingPathComponent("verification-key.jwk"), to: keys.appendingPathComponent("new.jwk"))
        try await reloaded(after: count)
        let newToken = try proxy.token(
            connector: "team-a/reg", actions: "pull", signingKey: newKeys.appendingPathComponent("signing-key.jwk").path)
        let checked = try runCommand(
            "/usr/bin/curl",
            [
                "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", bundle.path, "-H", "Authorization: Bearer \(newToken)",
                "https://\(proxy.host)/v2/",
            ])
        #expect(checked == "200")
        // The certificate.
        for file in ["tls.crt", "tls.key"] {
            let target = tlsDirectory.appendingPathComponent(file)
            let staged = tlsDirectory.appendingPathComponent(".\(file).new")
            try FileManager.default.copyItem(at: directory.appendingPathComponent("second/\(file)"), to: staged)
            _ = rename(staged.path, target.path)
        }
        // Clients keep reading until new connections get the new certificate.
        func servesSecond() -> Bool {
            let code = try? runCommand(
                "/usr/bin/curl",
                ["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", second.certificate.path, "https://\(proxy.host)/v2/"])
            return code == "401"
        }
        for _ in 0..<100 where !servesSecond() { try await Task.sleep(for: .milliseconds(50)) }
        #expect(servesSecond(), "the rotated certificate is not served")

        try Data().write(to: stop)
        let counts = try #require(
            try JSONSerialization.jsonObject(with: loadOutput.fileHandleForReading.readDataToEndOfFile()) as? [String: Int])
        load.waitUntilExit()
        #expect(counts.keys.sorted() == ["200"], "\(counts)")
        #expect((counts["200"] ?? 0) > 50, "\(counts)")
        #expect(proxy.isRunning)
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
