import Foundation
import OCITestSupport
import Testing

/// The proxy as workloads use it: real registries behind it, real clients and plain HTTP in
/// front, proxy tokens minted with the CLI.
@Suite("oci-connector-proxy end to end", .serialized)
struct ProxyEndToEndTests {
    enum Upstream: String, CaseIterable, Sendable {
        case anonymous, basic, token
    }

    /// A proxy in front of one shared registry, with the connector `team-a/up`.
    static func proxy(for kind: Upstream, extraArguments: [String] = []) async throws -> (
        ProxyProcess, TestRegistry, TokenIssuer?
    ) {
        let yaml: String
        let registry: TestRegistry
        var issuer: TokenIssuer?
        switch kind {
        case .anonymous:
            registry = try await SharedRegistries.shared.anonymous()
            yaml = ConnectorYAML.connector(name: "up", address: registry.url)
        case .basic:
            registry = try await SharedRegistries.shared.basic()
            yaml = ConnectorYAML.connector(name: "up", address: registry.url, username: "alice", password: "alice-secret")
        case .token:
            (registry, issuer) = try await SharedRegistries.shared.token()
            yaml = ConnectorYAML.connector(name: "up", address: registry.url, username: "robot$ci", password: "s3cret-robot")
        }
        let other = "---\n" + ConnectorYAML.connector(name: "other", address: registry.url)
        let proxy = try await ProxyProcess.start(
            binDirectory: Tool.binDirectory, connectorsYAML: yaml + other, extraArguments: extraArguments)
        return (proxy, registry, issuer)
    }

    static func seed(
        _ registry: TestRegistry, _ kind: Upstream, _ issuer: TokenIssuer?, repository: String, layerSize: Int = 4096,
        annotationBytes: Int = 0
    ) throws -> TestImage {
        let image = TestImage(layerSize: layerSize, seed: UInt8.random(in: 1...200), annotationBytes: annotationBytes)
        let user: (String, String)? =
            switch kind {
            case .anonymous: nil
            case .basic: SharedRegistries.basicUser
            case .token: SharedRegistries.robotUser
            }
        try Seeder.push(image, to: registry, repository: repository, tag: "v1", user: user, issuer: issuer)
        return image
    }

    @discardableResult
    static func skopeo(_ arguments: [String]) throws -> String {
        try runCommand("/usr/bin/skopeo", arguments)
    }

    @Test(arguments: Upstream.allCases)
    func skopeoCopiesInspectsListsAndDeletesThroughTheProxy(_ kind: Upstream) async throws {
        let (proxy, registry, issuer) = try await Self.proxy(for: kind)
        defer { proxy.stop() }
        _ = try Self.seed(registry, kind, issuer, repository: "e2e-\(kind)/src", layerSize: 300_000)
        let token = try proxy.token()
        let prefix = "\(proxy.host)/namespaces/team-a/connectors/up"
        let creds = [
            "--src-creds", "ci:\(token)", "--dest-creds", "ci:\(token)", "--src-tls-verify=false", "--dest-tls-verify=false",
        ]

        // Registry to registry, through the proxy both ways.
        try Self.skopeo(["copy"] + creds + ["docker://\(prefix)/e2e-\(kind)/src:v1", "docker://\(prefix)/e2e-\(kind)/dst:v2"])
        let inspected = try Self.skopeo([
            "inspect", "--tls-verify=false", "--creds", "ci:\(token)", "docker://\(prefix)/e2e-\(kind)/dst:v2",
        ])
        #expect(inspected.contains("\"Name\": \"\(prefix)/e2e-\(kind)/dst\""))
        let tags = try Self.skopeo([
            "list-tags", "--tls-verify=false", "--creds", "ci:\(token)", "docker://\(prefix)/e2e-\(kind)/dst",
        ])
        #expect(tags.contains("\"v2\""))

        // Out to a directory and back in under another name.
        let directory = try Loopback.temporaryDirectory("skopeo-dir")
        defer { try? FileManager.default.removeItem(at: directory) }
        try Self.skopeo([
            "copy", "--src-tls-verify=false", "--src-creds", "ci:\(token)",
            "docker://\(prefix)/e2e-\(kind)/dst:v2", "dir:\(directory.path)/image",
        ])
        #expect(FileManager.default.fileExists(atPath: "\(directory.path)/image/manifest.json"))
        try Self.skopeo([
            "copy", "--dest-tls-verify=false", "--dest-creds", "ci:\(token)",
            "dir:\(directory.path)/image", "docker://\(prefix)/e2e-\(kind)/back:v3",
        ])

        // Delete, then it is gone.
        try Self.skopeo(["delete", "--tls-verify=false", "--creds", "ci:\(token)", "docker://\(prefix)/e2e-\(kind)/back:v3"])
        #expect(throws: (any Error).self) {
            try Self.skopeo(["inspect", "--tls-verify=false", "--creds", "ci:\(token)", "docker://\(prefix)/e2e-\(kind)/back:v3"])
        }

        // The registry's credentials never reach the client or the log.
        let log = try String(contentsOf: proxy.logFile, encoding: .utf8)
        #expect(log.contains("status=201"))
        for secret in ["alice-secret", "s3cret-robot", token] { #expect(!log.contains(secret)) }
    }

    @Test(arguments: [Upstream.anonymous, .token])
    func orasPushesAndPullsAnArtifact(_ kind: Upstream) async throws {
        let (proxy, _, _) = try await Self.proxy(for: kind)
        defer { proxy.stop() }
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Scripts/oras_roundtrip.py")
        let workdir = try Loopback.temporaryDirectory("oras")
        let output = try runCommand(
            "/usr/bin/env", ["python3", script.path, proxy.host, "namespaces/team-a/connectors/up", workdir.path],
            input: try proxy.token())
        #expect(output.contains("oras round trip ok"), "\(output)")
    }

    @Test func loginProbeAndTokenErrorsComeBeforeAnyUpstreamCall() async throws {
        // A private issuer, so that no other test's token requests are counted.
        let (registry, issuer) = try await TokenAuthRegistry.start()
        defer { registry.stop(); issuer.stop() }
        let yaml =
            ConnectorYAML.connector(name: "up", address: registry.url, username: "robot$ci", password: "s3cret-robot")
            + "---\n" + ConnectorYAML.connector(name: "other", address: registry.url)
        let proxy = try await ProxyProcess.start(binDirectory: Tool.binDirectory, connectorsYAML: yaml)
        defer { proxy.stop() }
        let base = "http://\(proxy.host)"
        let manifest = "\(base)/v2/namespaces/team-a/connectors/up/e2e/app/manifests/v1"
        let before = issuer.counts.total

        let anonymous = try Curl.request("GET", "\(base)/v2/")
        #expect(anonymous.status == 401)
        #expect(anonymous.header("WWW-Authenticate")?.hasPrefix("Basic realm=") == true)
        #expect(anonymous.text.contains(#""code":"UNAUTHORIZED""#))
        #expect(try Curl.request("GET", "\(base)/v2/", token: proxy.token()).status == 200)
        #expect(try Curl.request("GET", "\(base)/v2/namespaces/team-a/connectors/up/", token: proxy.token()).status == 200)
        let bearer = try Curl.request("GET", "\(base)/v2/", headers: ["Authorization": "Bearer \(proxy.token())"])
        #expect(bearer.status == 200)

        let expired = try proxy.token(ttl: "1s")
        let cases: [(String?, Int, String)] = [
            (nil, 401, "UNAUTHORIZED"),
            ("not-a-token", 401, "UNAUTHORIZED"),
            (expired, 401, "UNAUTHORIZED"),
            (try otherSigner(proxy), 401, "UNAUTHORIZED"),
            (try proxy.token(connector: "team-a/other"), 403, "DENIED"),
            (try proxy.token(actions: "push"), 403, "DENIED"),
        ]
        try await ProxyProcess.waitUntilExpired(expired)
        for (token, status, code) in cases {
            let response = try Curl.request("GET", manifest, token: token)
            #expect(response.status == status, "\(response.text)")
            #expect(response.text.contains(#""code":"\#(code)""#), "\(response.text)")
        }
        let pullOnly = try Curl.request("DELETE", manifest, token: proxy.token(actions: "pull"))
        #expect(pullOnly.status == 403)
        #expect(issuer.counts.total == before, "a refused request reached the token server")
    }

    /// `/v2/`, which every client asks before a pull or a push, is answered by the proxy itself
    /// with a valid token, the same from either path that answers it (the event loop for a plain
    /// keep-alive request, the responder for one with a `Connection` header), and logged.
    @Test func versionChecksAreAnsweredByTheProxyAndLogged() async throws {
        // The upstream is closed: nothing here may need it.
        let closed = try Loopback.freePort()
        let yaml =
            ConnectorYAML.connector(name: "up", address: "http://127.0.0.1:\(closed)")
            + "---\n" + ConnectorYAML.connector(name: "other", address: "http://127.0.0.1:\(closed)")
        let proxy = try await ProxyProcess.start(binDirectory: Tool.binDirectory, connectorsYAML: yaml)
        defer { proxy.stop() }
        let base = "http://\(proxy.host)/v2"
        let token = try proxy.token()
        let imfFixdate =
            /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT$/

        var answers: [Curl.Response] = []
        for headers in [[:], ["Connection": "keep-alive"]] {
            for url in ["\(base)/", "\(base)/namespaces/team-a/connectors/up/"] {
                let get = try Curl.request("GET", url, headers: headers, token: token)
                #expect(get.status == 200 && get.text == "{}", "\(url) \(headers): \(get.status) \(get.text)")
                let head = try Curl.request("HEAD", url, headers: headers, token: token)
                #expect(head.status == 200 && head.body.isEmpty, "\(url) \(headers)")
                answers += [get, head]
            }
        }
        for answer in answers {
            #expect(answer.header("Content-Type") == "application/json")
            #expect(answer.header("Docker-Distribution-API-Version") == "registry/2.0")
            #expect(answer.header("Content-Length") == "2")
            #expect(answer.header("Date").map { $0.wholeMatch(of: imfFixdate) != nil } == true, "\(answer.headers)")
        }

        // A connector the token does not name, or that is not configured, is refused as before.
        let other = try Curl.request("GET", "\(base)/namespaces/team-a/connectors/other/", token: token)
        #expect(other.status == 403 && other.text.contains(#""code":"DENIED""#), "\(other.text)")
        let unknown = try Curl.request(
            "GET", "\(base)/namespaces/team-a/connectors/nope/", token: try proxy.token(connector: "team-a/nope"))
        #expect(unknown.status == 404 && unknown.text.contains(#""code":"NAME_UNKNOWN""#), "\(unknown.text)")
        #expect(try Curl.request("GET", "\(base)/", token: "not-a-token").status == 401)

        // One line for each answer, written when it ends; the 401 came last.
        _ = try await proxy.logLine(containing: "status=401")
        let log = try String(contentsOf: proxy.logFile, encoding: .utf8)
        let checks = log.split(separator: "\n").filter { $0.contains("endpoint=/ ") && $0.contains("status=200") }
        #expect(checks.count == answers.count, "\(log)")
        #expect(checks.filter { $0.contains("connector=team-a/up ") }.count == answers.count / 2, "\(log)")
        #expect(checks.filter { $0.contains("method=GET") && $0.contains("bytes_out=2 ") }.count == answers.count / 2, "\(log)")
        #expect(!log.contains(token), "the token is in the log")
        // The line's shape, as swift-log's StreamLogHandler writes it, fields sorted.
        let shape =
            /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} info oci-connector-proxy: bytes_in=0 bytes_out=2 client=127\.0\.0\.1:\d+ connector=- duration_ms=\d+ endpoint=\/ identity=workload method=GET repository=- request_id=(?<id>[0-9a-f]{8}) status=200 upstream_ms=0 \[OCIConnectorProxy\] request$/
        let shaped = checks.compactMap { $0.wholeMatch(of: shape) }
        #expect(shaped.count == 2, "\(checks)")
        let ids = log.split(separator: "\n").compactMap { $0.firstMatch(of: #/request_id=([0-9a-f]{8}) /#)?.1 }
        #expect(ids.count > answers.count && Set(ids).count == ids.count, "\(ids)")
    }

    /// A read whose upstream cannot be reached gets a 502 in the registry's error format from
    /// either path that answers reads (the event loop for a plain keep-alive request, the
    /// responder for one with a `Connection` header), with no credential in it or in the log.
    @Test func anUnreachableUpstreamIsAnErrorInTheRegistrysFormat() async throws {
        let closed = try Loopback.freePort()
        let yaml = ConnectorYAML.connector(
            name: "down", address: "http://127.0.0.1:\(closed)", username: "robot$ci", password: "s3cret-robot")
        let proxy = try await ProxyProcess.start(binDirectory: Tool.binDirectory, connectorsYAML: yaml)
        defer { proxy.stop() }
        let directory = try Loopback.temporaryDirectory("down")
        defer { try? FileManager.default.removeItem(at: directory) }
        let base = "http://\(proxy.host)/v2/namespaces/team-a/connectors/down/e2e/app"
        let blob = "blobs/sha256:" + String(repeating: "0", count: 64)
        let token = try proxy.token(connector: "team-a/down")
        let cases = ["GET", "HEAD"].flatMap { method in
            ["manifests/v1", blob].flatMap { path in [(method, path, false), (method, path, true)] }
        }
        // All at once, from one curl: the upstream client gives up on a refused connection only
        // after its connect timeout (10 s).
        var arguments = ["--parallel", "--parallel-immediate"]
        for (index, (method, path, viaResponder)) in cases.enumerated() {
            if index > 0 { arguments.append("--next") }
            arguments += [
                "-s", "-u", "w:\(token)", "-D", "\(directory.path)/head-\(index)", "-o", "\(directory.path)/body-\(index)",
            ]
            arguments += method == "HEAD" ? ["-I"] : []
            arguments += viaResponder ? ["-H", "Connection: keep-alive"] : []
            arguments.append("\(base)/\(path)")
        }
        _ = try runCommand("/usr/bin/curl", arguments)
        for (index, (method, path, viaResponder)) in cases.enumerated() {
            let label = "\(method) \(path)\(viaResponder ? " with Connection" : "")"
            let head = (try? String(contentsOf: directory.appendingPathComponent("head-\(index)"), encoding: .utf8)) ?? ""
            let body = (try? String(contentsOf: directory.appendingPathComponent("body-\(index)"), encoding: .utf8)) ?? ""
            #expect(head.hasPrefix("HTTP/1.1 502"), "\(label): \(head)")
            #expect(head.lowercased().contains("content-type: application/json"), "\(label): \(head)")
            #expect(head.lowercased().contains("\r\ndate: "), "\(label): \(head)")
            if method == "GET" {
                #expect(body.contains(#""code":"UNAVAILABLE""#), "\(label): \(body)")
                #expect(body.contains("127.0.0.1:\(closed)"), "\(label): \(body)")
            } else {
                #expect(body == head, "\(label): \(body)")  // curl -I writes the headers as the output, and no body
            }
            #expect(!head.contains("s3cret-robot") && !body.contains("s3cret-robot"))
        }
        // The proxy goes on: its own endpoint answers, and the log names no secret.
        #expect(try Curl.request("GET", "http://\(proxy.host)/v2/", token: token).status == 200)
        let log = try String(contentsOf: proxy.logFile, encoding: .utf8)
        #expect(log.components(separatedBy: "status=502").count - 1 == cases.count, "\(log.suffix(1200))")
        #expect(!log.contains("s3cret-robot"))
    }

    func otherSigner(_ proxy: ProxyProcess) throws -> String {
        let directory = try Loopback.temporaryDirectory("other-keys")
        try runCommand(
            proxy.binDirectory.appendingPathComponent("oci-connector-config").path,
            ["keys", "generate", "--out", directory.path])
        return try proxy.token(signingKey: directory.appendingPathComponent("signing-key.jwk").path)
    }

    @Test func uploadLocationsAndRangeReadsAndMounts() async throws {
        let (proxy, registry, issuer) = try await Self.proxy(for: .token)
        defer { proxy.stop() }
        let image = try Self.seed(registry, .token, issuer, repository: "e2e/mount-src", layerSize: 10_000)
        let token = try proxy.token()
        let base = "http://\(proxy.host)/v2/namespaces/team-a/connectors/up"

        // The upload Location names the proxy and the prefixed repository, and keeps _state.
        let started = try Curl.request("POST", "\(base)/e2e/upload/blobs/uploads/", token: token)
        #expect(started.status == 202)
        let location = try #require(started.header("Location"))
        #expect(
            location.hasPrefix("http://\(proxy.host)/v2/namespaces/team-a/connectors/up/e2e/upload/blobs/uploads/"), "\(location)"
        )
        #expect(location.contains("_state="))
        #expect(!location.contains(registry.host))
        // Upload status and cancellation pass through.
        let status = try Curl.request("GET", location, token: token)
        #expect(status.status == 204)
        #expect(status.header("Range") == "0-0" || status.header("Range") == "0--1", "\(status.headers)")
        #expect(status.header("Location")?.hasPrefix("http://\(proxy.host)/v2/namespaces/") == true)
        let cancelled = try #require(
            try Curl.request("POST", "\(base)/e2e/upload/blobs/uploads/", token: token).header("Location"))
        #expect(try Curl.request("DELETE", cancelled, token: token).status == 204)
        #expect(try Curl.request("GET", cancelled, token: token).status == 404)

        let blob = Data("a small blob".utf8)
        let finished = try Curl.request(
            "PUT", location + "&digest=\(sha256Digest(blob))", headers: ["Content-Type": "application/octet-stream"],
            token: token, data: blob)
        #expect(finished.status == 201, "\(finished.text)")

        // A client that waits for "100 Continue" before sending its upload gets it at once.
        let continued = try #require(
            try Curl.request("POST", "\(base)/e2e/continue/blobs/uploads/", token: token).header("Location"))
        let exchange = try runCommand(
            "/usr/bin/curl",
            [
                "-s", "-D", "-", "-o", "/dev/null", "-u", "w:\(token)", "-X", "PATCH", "-H", "Expect: 100-continue",
                "-H", "Content-Type: application/octet-stream", "--data-binary", "some bytes", continued,
            ])
        #expect(exchange.contains("HTTP/1.1 100 Continue"), "\(exchange)")
        #expect(exchange.contains("HTTP/1.1 202"), "\(exchange)")

        // Range reads of a blob.
        let layerDigest = sha256Digest(image.layer)
        let ranged = try Curl.request(
            "GET", "\(base)/e2e/mount-src/blobs/\(layerDigest)", headers: ["Range": "bytes=100-199"], token: token)
        #expect(ranged.status == 206)
        #expect(ranged.body == image.layer[100..<200])

        // Mount from a repository of the same connector; refuse one of another connector.
        let mounted = try Curl.request(
            "POST",
            "\(base)/e2e/mount-dst/blobs/uploads/?mount=\(layerDigest)&from=namespaces/team-a/connectors/up/e2e/mount-src",
            token: token)
        #expect(mounted.status == 201, "\(mounted.text)")
        #expect(try Curl.request("HEAD", "\(base)/e2e/mount-dst/blobs/\(layerDigest)", token: token).status == 200)
        let foreign = try Curl.request(
            "POST", "\(base)/e2e/mount-dst/blobs/uploads/?mount=\(layerDigest)&from=namespaces/team-a/connectors/other/x",
            token: token)
        #expect(foreign.status == 403)

        // HEAD and GET of a manifest carry the upstream's length, type, digest and bytes, whether
        // the responder answers them or (with the upstream token for their scope at hand) the
        // event loop does.
        for _ in 0..<3 {
            for method in ["HEAD", "GET"] {
                let read = try Curl.request(
                    method, "\(base)/e2e/mount-src/manifests/v1",
                    headers: ["Accept": TestImage.manifestMediaType], token: token)
                #expect(read.status == 200)
                #expect(read.header("Content-Length") == "\(image.manifest.count)")
                #expect(read.header("Content-Type") == TestImage.manifestMediaType)
                #expect(read.header("Docker-Content-Digest") == image.manifestDigest)
                #expect(read.body == (method == "GET" ? image.manifest : Data()))
            }
        }
        // Tag lists and referrers too, with the same answer from either path (a `Connection`
        // header sends a request to the responder).
        for endpoint in ["tags/list", "referrers/\(image.manifestDigest)"] {
            let answers = try [[:], ["Connection": "keep-alive"]].map { headers in
                try Curl.request("GET", "\(base)/e2e/mount-src/\(endpoint)", headers: headers, token: token)
            }
            #expect(answers[0].status == answers[1].status && answers[0].body == answers[1].body, "\(endpoint)")
            #expect(answers[0].header("Content-Type") == answers[1].header("Content-Type"), "\(endpoint)")
            if endpoint == "tags/list" {
                #expect(answers[0].status == 200 && answers[0].text.contains(#""v1""#), "\(answers[0].text)")
            }
        }
        let otherRepository = try Curl.request(
            "GET", "\(base)/e2e/mount-src/tags/list", token: proxy.token(repository: "e2e/other"))
        #expect(otherRepository.status == 403, "\(otherRepository.text)")
        for method in ["HEAD", "GET"] {
            let missing = try Curl.request(method, "\(base)/e2e/mount-src/manifests/nope", token: token)
            #expect(missing.status == 404)
            #expect(method == "HEAD" || missing.text.contains("MANIFEST_UNKNOWN"), "\(missing.text)")
            #expect(try Curl.request(method, "\(base)/e2e/mount-src/manifests/v1", token: otherSigner(proxy)).status == 401)
        }
    }

    @Test func catalogPaginationLinksAreRewritten() async throws {
        let (proxy, registry, _) = try await Self.proxy(for: .anonymous)
        defer { proxy.stop() }
        for name in ["e2e-page/a", "e2e-page/b"] { _ = try Self.seed(registry, .anonymous, nil, repository: name) }
        let response = try Curl.request(
            "GET", "http://\(proxy.host)/v2/namespaces/team-a/connectors/up/_catalog?n=1", token: proxy.token())
        #expect(response.status == 200)
        let link = try #require(response.header("Link"))
        #expect(link.hasPrefix("<http://\(proxy.host)/v2/namespaces/team-a/connectors/up/_catalog?"), "\(link)")
        #expect(link.hasSuffix(#"rel="next""#))
    }

    @Test func hostFormRoutesByTheHostHeader() async throws {
        let (proxy, registry, _) = try await Self.proxy(
            for: .anonymous, extraArguments: ["--host-pattern", "c-{name}.{namespace}.proxy.test"])
        defer { proxy.stop() }
        let image = try Self.seed(registry, .anonymous, nil, repository: "e2e-host/app")
        let response = try Curl.request(
            "GET", "http://\(proxy.host)/v2/e2e-host/app/manifests/v1",
            headers: ["Host": "c-up.team-a.proxy.test", "Accept": TestImage.manifestMediaType], token: proxy.token())
        #expect(response.status == 200, "\(response.text)")
        #expect(response.body == image.manifest)
    }

    /// A registry served over TLS with its own certificate authority (`spec.tls.caBundle`), among
    /// 300 other `https` connectors: skopeo copies an image through the proxy (reads on its blob
    /// connections, writes through its HTTP client, both trusting the bundle), and the proxy's
    /// memory does not grow with the number of connectors (connectors with the same trust share
    /// one TLS set-up, instead of parsing the system's authorities about 1 MiB at a time each).
    @Test func httpsConnectorsTrustTheirBundleAndShareTheirTLSSetUp() async throws {
        let registry = try await TestRegistry.start(.anonymous, tls: true)
        defer { registry.stop() }
        let pem = try #require(registry.certificatePEM)
        let bundle = pem.split(separator: "\n").map { "      \($0)" }.joined(separator: "\n")
        var yaml = """
            apiVersion: connectors.alauda.io/v1alpha1
            kind: Connector
            metadata: {name: up, namespace: team-a}
            spec:
              connectorClassName: oci
              address: \(registry.url)
              tls:
                caBundle: |
            \(bundle)

            """
        for index in 0..<300 {
            yaml += "---\n" + ConnectorYAML.connector(name: "far-\(index)", address: "https://registry-\(index).example.invalid")
        }
        let proxy = try await ProxyProcess.start(binDirectory: Tool.binDirectory, connectorsYAML: yaml)
        defer { proxy.stop() }
        let image = try Self.seed(registry, .anonymous, nil, repository: "e2e-tls/src", layerSize: 300_000)
        let token = try proxy.token()
        let prefix = "\(proxy.host)/namespaces/team-a/connectors/up"
        try Self.skopeo([
            "copy", "--src-creds", "ci:\(token)", "--dest-creds", "ci:\(token)", "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "docker://\(prefix)/e2e-tls/src:v1", "docker://\(prefix)/e2e-tls/dst:v1",
        ])
        // What skopeo wrote (it compresses the layer, so its digest is new) and the layer it read.
        let base = "http://\(proxy.host)/v2/namespaces/team-a/connectors/up/e2e-tls"
        let written = try Curl.request(
            "GET", "\(base)/dst/manifests/v1", headers: ["Accept": TestImage.manifestMediaType], token: token)
        #expect(written.status == 200)
        #expect(written.text.contains(#""layers""#), "\(written.text)")
        let layer = try Curl.request("GET", "\(base)/src/blobs/\(sha256Digest(image.layer))", token: token)
        #expect(layer.status == 200)
        #expect(sha256Digest(layer.body) == sha256Digest(image.layer))
        let peak = try #require(proxy.peakResidentKiB)
        print("301 https connectors: proxy peak RSS \(peak / 1024) MiB")
        #expect(peak < 160 * 1024, "peak RSS \(peak / 1024) MiB")
    }

    @Test func manyLayersMakeOneUpstreamTokenRequestPerScope() async throws {
        let (registry, issuer) = try await TokenAuthRegistry.start()
        defer { registry.stop(); issuer.stop() }
        let yaml = ConnectorYAML.connector(name: "up", address: registry.url, username: "robot$ci", password: "s3cret-robot")
        let proxy = try await ProxyProcess.start(binDirectory: Tool.binDirectory, connectorsYAML: yaml)
        defer { proxy.stop() }
        // Ten images' worth of blobs under one repository.
        for seed in 1...10 {
            try Seeder.push(
                TestImage(layerSize: 50_000, seed: UInt8(seed)), to: registry, repository: "many/app", tag: "v\(seed)",
                user: SharedRegistries.robotUser, issuer: issuer)
        }
        let before = issuer.counts.total
        let token = try proxy.token()
        let directory = try Loopback.temporaryDirectory("many")
        defer { try? FileManager.default.removeItem(at: directory) }
        for seed in 1...10 {
            try Self.skopeo([
                "copy", "--src-tls-verify=false", "--src-creds", "ci:\(token)",
                "docker://\(proxy.host)/namespaces/team-a/connectors/up/many/app:v\(seed)", "dir:\(directory.path)/\(seed)",
            ])
        }
        #expect(issuer.counts.total - before == 1, "scopes requested: \(issuer.scopesRequested.suffix(5))")
    }
}
