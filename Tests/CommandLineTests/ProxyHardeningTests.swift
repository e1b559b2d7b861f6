import Foundation
import OCITestSupport
import Testing

/// The proxy probed as an attacker and a careless operator would: upstreams that refuse the
/// connector, tokens that reach for other repositories, connections that never finish a request,
/// bad flags. Each test names what it guards against.
@Suite("oci-connector-proxy under hostile input", .serialized)
struct ProxyHardeningTests {
    static let scripts = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Scripts")

    /// Runs `hostile_connections.py` and decodes what it printed.
    static func hostile(_ arguments: [String], input: String? = nil) throws -> [String: Any] {
        let output = try runCommand(
            "/usr/bin/env", ["python3", scripts.appendingPathComponent("hostile_connections.py").path] + arguments,
            input: input)
        return try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any] ?? [:]
    }

    static func statuses(_ result: [String: Any]) -> [Int] {
        (result["responses"] as? [[String: Any]] ?? []).compactMap { $0["status"] as? Int }
    }

    static func connectionHeaders(_ result: [String: Any]) -> [String?] {
        (result["responses"] as? [[String: Any]] ?? []).map { $0["connection"] as? String }
    }

    static func residentKiB(_ proxy: ProxyProcess) -> Int {
        let status = (try? String(contentsOfFile: "/proc/\(proxy.processIdentifier)/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
    }

    // MARK: Upstreams that refuse the connector

    /// Once, a 401 the proxy could not recover from had its body read twice, which killed the
    /// whole process on the first manifest or tag read of any client with a valid token.
    @Test func anUpstreamRefusingTheConnectorIsDeniedAndEveryOtherConnectorKeepsWorking() async throws {
        let basic = try await SharedRegistries.shared.basic()
        let anonymous = try await SharedRegistries.shared.anonymous()
        let (tokenRegistry, issuer) = try await SharedRegistries.shared.token()
        let repository = "refused-\(UInt32.random(in: 0...UInt32.max))/app"
        try Seeder.push(
            TestImage(layerSize: 512, seed: 3), to: basic, repository: repository, tag: "v1",
            user: SharedRegistries.basicUser)
        _ = issuer
        let yaml = [
            // No credentials in front of a registry that needs them.
            ConnectorYAML.connector(name: "anonymous", address: basic.url),
            // A rotated password, Basic and token auth.
            ConnectorYAML.connector(name: "rotated", address: basic.url, username: "alice", password: "the-old-password"),
            ConnectorYAML.connector(
                name: "rotated-token", address: tokenRegistry.url, username: "robot$ci", password: "the-old-password"),
            // And one that works, on another registry.
            ConnectorYAML.connector(name: "good", address: anonymous.url),
        ].joined(separator: "---\n")
        let proxy = try await ProxyProcess.start(binDirectory: Tool.binDirectory, connectorsYAML: yaml)
        defer { proxy.stop() }
        let goodImage = try Seeder.pushReturningImage(to: anonymous, repository: repository)
        let token = try proxy.token(
            connector: "team-a/anonymous,team-a/rotated,team-a/rotated-token,team-a/good", actions: "pull")

        for connector in ["anonymous", "rotated", "rotated-token"] {
            let base = "http://\(proxy.host)/v2/namespaces/team-a/connectors/\(connector)/\(repository)"
            for (method, path) in [
                ("GET", "manifests/v1"), ("HEAD", "manifests/v1"), ("GET", "tags/list"),
                ("GET", "manifests/v1"), ("GET", "tags/list?n=10"),
            ] {
                let response = try Curl.request(method, "\(base)/\(path)", token: token)
                #expect(response.status == 403, "\(connector) \(method) \(path): \(response.status) \(response.text)")
                if method == "GET" {
                    #expect(response.text.contains(#""code":"DENIED""#), "\(connector) \(path): \(response.text)")
                }
                #expect(proxy.isRunning, "the proxy died on \(connector) \(method) \(path)")
            }
        }
        let good = try Curl.request(
            "GET", "http://\(proxy.host)/v2/namespaces/team-a/connectors/good/\(repository)/manifests/v1",
            headers: ["Accept": TestImage.manifestMediaType], token: token)
        #expect(good.status == 200)
        #expect(good.body == goodImage.manifest)
        let log = try String(contentsOf: proxy.logFile, encoding: .utf8)
        #expect(!log.contains("Fatal error"))
        #expect(!log.contains("the-old-password"))
    }

    // MARK: Cross-repository mounts

    /// A token limited to `team/*` could mount a blob from any repository of the connector and
    /// then read it, through `from` with or without `%2F`, a percent-encoded parameter name, or
    /// the same fields in a form body (which the registry reads as query parameters).
    @Test func aMountSourceIsAuthorisedLikeAPullOfIt() async throws {
        let registry = try await SharedRegistries.shared.anonymous()
        let run = "mount-\(UInt32.random(in: 0...UInt32.max))"
        let secret = TestImage(layerSize: 1500, seed: 77)
        try Seeder.push(secret, to: registry, repository: "\(run)/secret/vault", tag: "v1")
        let shared = TestImage(layerSize: 1400, seed: 78)
        try Seeder.push(shared, to: registry, repository: "\(run)/team/app", tag: "v1")
        let proxy = try await ProxyProcess.start(
            binDirectory: Tool.binDirectory, connectorsYAML: ConnectorYAML.connector(name: "up", address: registry.url),
            extraArguments: ["--host-pattern", "c-{name}.{namespace}.proxy.test"])
        defer { proxy.stop() }
        let token = try proxy.token(actions: "pull,push", repository: "\(run)/team/*")
        let prefix = "namespaces/team-a/connectors/up"
        let base = "http://\(proxy.host)/v2/\(prefix)/\(run)"
        let secretDigest = sha256Digest(secret.layer)
        #expect(try Curl.request("HEAD", "\(base)/secret/vault/blobs/\(secretDigest)", token: token).status == 403)

        let encodedPrefix = prefix.replacingOccurrences(of: "/", with: "%2F")
        let attempts: [(String, String, Data?, [String: String])] = [
            ("plain", "mount=\(secretDigest)&from=\(prefix)/\(run)/secret/vault", nil, [:]),
            ("encoded slashes", "mount=\(secretDigest)&from=\(encodedPrefix)%2F\(run)%2Fsecret%2Fvault", nil, [:]),
            ("encoded name", "mount=\(secretDigest)&%66rom=\(prefix)/\(run)/secret/vault", nil, [:]),
            ("encoded name, no prefix", "mount=\(secretDigest)&%66rom=\(run)/secret/vault", nil, [:]),
            ("twice", "mount=\(secretDigest)&from=\(prefix)/\(run)/team/app&from=\(prefix)/\(run)/secret/vault", nil, [:]),
            ("semicolon", "mount=\(secretDigest);from=\(prefix)/\(run)/secret/vault", nil, [:]),
            (
                "form body", "", Data("mount=\(secretDigest)&from=\(prefix)/\(run)/secret/vault".utf8),
                ["Content-Type": "application/x-www-form-urlencoded"]
            ),
        ]
        for (index, (name, query, body, headers)) in attempts.enumerated() {
            let target = "\(run)/team/loot\(index)"
            let response = try Curl.request(
                "POST", "http://\(proxy.host)/v2/\(prefix)/\(target)/blobs/uploads/?\(query)",
                headers: headers, token: token, data: body)
            #expect(response.status != 201, "\(name): \(response.status) \(response.text)")
            #expect(response.text.contains(#""errors""#), "\(name): \(response.text)")
            let read = try Curl.request("HEAD", "http://\(proxy.host)/v2/\(prefix)/\(target)/blobs/\(secretDigest)", token: token)
            #expect(read.status == 404, "\(name): the secret blob is readable as \(target)")
        }

        // The host form names no prefix; the pattern still applies.
        let hostForm = try Curl.request(
            "POST", "http://\(proxy.host)/v2/\(run)/team/loot-host/blobs/uploads/?mount=\(secretDigest)&from=\(run)/secret/vault",
            headers: ["Host": "c-up.team-a.proxy.test"], token: token)
        #expect(hostForm.status == 403, "host form: \(hostForm.status) \(hostForm.text)")

        // A mount the token may make still works, in both forms.
        let sharedDigest = sha256Digest(shared.layer)
        let mounted = try Curl.request(
            "POST", "\(base)/team/copy/blobs/uploads/?mount=\(sharedDigest)&from=\(prefix)/\(run)/team/app", token: token)
        #expect(mounted.status == 201, "\(mounted.status) \(mounted.text)")
        #expect(mounted.header("Location")?.contains("/v2/\(prefix)/\(run)/team/copy/blobs/\(sharedDigest)") == true)
        #expect(try Curl.request("HEAD", "\(base)/team/copy/blobs/\(sharedDigest)", token: token).status == 200)
        let mountedHostForm = try Curl.request(
            "POST", "http://\(proxy.host)/v2/\(run)/team/copy-host/blobs/uploads/?mount=\(sharedDigest)&from=\(run)%2Fteam%2Fapp",
            headers: ["Host": "c-up.team-a.proxy.test"], token: token)
        #expect(mountedHostForm.status == 201, "\(mountedHostForm.status) \(mountedHostForm.text)")
    }

    // MARK: _catalog

    /// A token limited to `team/*` listed every repository of the upstream, and the `Link` of
    /// each page would have named the next repository outside its pattern.
    @Test func theCatalogListsOnlyWhatTheTokenMayPullOnEveryPage() async throws {
        let registry = try await SharedRegistries.shared.anonymous()
        let run = "catalog-\(UInt32.random(in: 0...UInt32.max))"
        let allowed = ["\(run)/team/a", "\(run)/team/b", "\(run)/team/c"]
        for repository in allowed + ["\(run)/secret/x", "\(run)/team/a/deeper", "\(run)/teamx/y"] {
            try Seeder.pushReturningImage(to: registry, repository: repository)
        }
        let proxy = try await ProxyProcess.start(
            binDirectory: Tool.binDirectory, connectorsYAML: ConnectorYAML.connector(name: "up", address: registry.url))
        defer { proxy.stop() }
        let token = try proxy.token(actions: "pull", repository: "\(run)/team/*")
        let base = "http://\(proxy.host)/v2/namespaces/team-a/connectors/up/_catalog"

        func names(_ response: Curl.Response) throws -> [String] {
            let json = try JSONSerialization.jsonObject(with: response.body) as? [String: Any]
            return json?["repositories"] as? [String] ?? []
        }
        let whole = try Curl.request("GET", base, token: token)
        #expect(whole.status == 200)
        #expect(try names(whole) == allowed)

        // One name a page: every link names only what the token may see, and the walk ends.
        var url: String? = "\(base)?n=1"
        var walked: [String] = []
        var pages = 0
        while let next = url, pages < 10 {
            pages += 1
            let page = try Curl.request("GET", next, token: token)
            #expect(page.status == 200)
            walked += try names(page)
            let link = page.header("Link")
            #expect(
                link.map { !$0.contains("secret") && !$0.contains("teamx") && !$0.contains("deeper") } ?? true, "\(link ?? "")")
            url = link.flatMap { $0.split(separator: "<").last?.split(separator: ">").first.map(String.init) }
        }
        #expect(walked == allowed)
        #expect(pages == 3)

        // A token for the whole connector still sees the upstream's catalog as it is.
        let everything = try Curl.request("GET", base, token: try proxy.token(actions: "pull"))
        #expect(try names(everything).contains("\(run)/secret/x"))
        #expect(try Curl.request("GET", "\(base)?n=5000", token: token).status == 400)
    }

    // MARK: Connections that hold the proxy

    /// `CONNECT` or an `Upgrade` made the proxy keep every byte the client sent afterwards, with
    /// no token at all: one connection grew it by a gibibyte.
    @Test(arguments: ["connect", "upgrade", "upgrade-anonymous"])
    func connectAndUpgradesAreAnsweredAndClosedWithNothingKept(_ mode: String) async throws {
        let registry = try await SharedRegistries.shared.anonymous()
        let proxy = try await ProxyProcess.start(
            binDirectory: Tool.binDirectory, connectorsYAML: ConnectorYAML.connector(name: "up", address: registry.url))
        defer { proxy.stop() }
        let before = Self.residentKiB(proxy)
        let result = try Self.hostile(["flood", "\(proxy.port)", mode, "256"], input: try proxy.token())
        let after = Self.residentKiB(proxy)
        #expect(result["closed"] as? Bool == true, "\(result)")
        #expect(Self.statuses(result).count == 1, "\(result)")
        #expect(Self.connectionHeaders(result) == ["close"], "\(result)")
        if mode == "connect" { #expect(Self.statuses(result) == [405]) }
        #expect(after - before < 32 * 1024, "the proxy grew by \(after - before) KiB")
        #expect(proxy.isRunning)
    }

    /// 1500 connections holding part of a request head stayed open indefinitely, each pinning up
    /// to ~158 KiB; idle keep-alive connections were never closed; heads up to 80 KiB were kept.
    @Test func headsThatNeverEndIdleConnectionsOversizedHeadsAndOneConnectionTooManyAreRefused() async throws {
        let registry = try await SharedRegistries.shared.anonymous()
        let proxy = try await ProxyProcess.start(
            binDirectory: Tool.binDirectory, connectorsYAML: ConnectorYAML.connector(name: "up", address: registry.url),
            extraArguments: [
                "--header-timeout", "1", "--idle-timeout", "2", "--max-header-bytes", "8192", "--max-connections", "6",
            ])
        defer { proxy.stop() }
        let port = "\(proxy.port)"

        let partial = try Self.hostile(["partial-head", port])
        #expect(Self.statuses(partial) == [408], "\(partial)")
        #expect(partial["closed"] as? Bool == true)
        #expect((partial["body"] as? String)?.contains(#""errors""#) == true)

        let silent = try Self.hostile(["silent", port])
        #expect(Self.statuses(silent).isEmpty, "\(silent)")
        #expect(silent["closed"] as? Bool == true)

        let oversized = try Self.hostile(["oversized-head", port, "12000"])
        #expect(Self.statuses(oversized) == [431], "\(oversized)")
        #expect(oversized["closed"] as? Bool == true)
        // Under the limit, served as usual.
        let fits = try Curl.request(
            "GET", "http://\(proxy.host)/v2/", headers: ["X-Padding": String(repeating: "a", count: 6000)],
            token: try proxy.token())
        #expect(fits.status == 200)

        let overLimit = try Self.hostile(["over-limit", port, "6"])
        #expect(Self.statuses(overLimit) == [503], "\(overLimit)")
        #expect(overLimit["closed"] as? Bool == true)
        let afterwards = (overLimit["afterwards"] as? [[String: Any]])?.first?["status"] as? Int
        #expect(afterwards == 401, "\(overLimit)")
    }

    /// After an HTTP/1.0 request without `keep-alive` the connection stayed open, and a request
    /// pipelined after it was answered `400`.
    @Test func anHTTP10RequestWithoutKeepAliveEndsItsConnection() async throws {
        let registry = try await SharedRegistries.shared.anonymous()
        let proxy = try await ProxyProcess.start(
            binDirectory: Tool.binDirectory, connectorsYAML: ConnectorYAML.connector(name: "up", address: registry.url))
        defer { proxy.stop() }
        let result = try Self.hostile(["http10-pipelined", "\(proxy.port)"])
        #expect(Self.statuses(result) == [401], "\(result)")
        #expect(Self.connectionHeaders(result) == ["close"], "\(result)")
        #expect(result["closed"] as? Bool == true, "\(result)")
    }

    // MARK: Flags

    /// A port in use or `-1` aborted with "Client not shut down before the deinit" and a
    /// backtrace; `99999` listened on another port.
    @Test func badListenAddressesExitWithOneClearLine() async throws {
        let registry = try await SharedRegistries.shared.anonymous()
        let running = try await ProxyProcess.start(
            binDirectory: Tool.binDirectory, connectorsYAML: ConnectorYAML.connector(name: "up", address: registry.url))
        defer { running.stop() }
        let connectors = running.directory.appendingPathComponent("connectors.yaml").path
        let keys = running.directory.appendingPathComponent("keys/verification-key.jwk").path
        let cases = [
            ("127.0.0.1:\(running.port)", "Address already in use"),
            ("127.0.0.1:-1", "out of range"),
            ("127.0.0.1:99999", "out of range"),
            ("127.0.0.1", "HOST:PORT"),
        ]
        for (listen, reason) in cases {
            let result = try Tool.run("oci-connector-proxy", "--connectors", connectors, "--token-keys", keys, "--listen", listen)
            #expect(result.status != 0, "\(listen)")
            let errorLine = result.stderr.split(separator: "\n").first { $0.hasPrefix("Error:") }
            #expect(errorLine?.contains(reason) == true, "\(listen): \(result.stderr)")
            #expect(!result.stderr.contains("Client not shut down"), "\(listen)")
            #expect(!result.stderr.contains("Fatal error"), "\(listen)")
            #expect(!result.stdout.contains("listening on"), "\(listen): \(result.stdout)")
        }
    }

    /// An empty connectors file started a proxy that served nothing, without a word.
    @Test func anEmptyConnectorsFileIsReportedOrRefused() async throws {
        let directory = try Loopback.temporaryDirectory("empty-connectors")
        defer { try? FileManager.default.removeItem(at: directory) }
        let empty = directory.appendingPathComponent("connectors.yaml")
        try Data().write(to: empty)
        try runCommand(
            Tool.binDirectory.appendingPathComponent("oci-connector-config").path,
            ["keys", "generate", "--out", directory.appendingPathComponent("keys").path])
        let keys = directory.appendingPathComponent("keys/verification-key.jwk").path
        let refused = try Tool.run(
            "oci-connector-proxy", "--connectors", empty.path, "--token-keys", keys, "--listen", "127.0.0.1:0",
            "--require-connectors")
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("no connector is defined"), "\(refused.stderr)")

        let proxy = try await ProxyProcess.start(binDirectory: Tool.binDirectory, connectorsYAML: "")
        defer { proxy.stop() }
        let warning = try await proxy.logLine(containing: "no connector is defined")
        #expect(warning?.contains("warning") == true)
    }

    // MARK: Upstream answers

    /// A proxy whose connector `team-a/up` leads to a ``StubUpstream`` with Basic credentials.
    static func proxyInFrontOfStub(extraArguments: [String] = []) async throws -> (StubUpstream, ProxyProcess) {
        let stub = try await StubUpstream.start()
        do {
            let yaml = ConnectorYAML.connector(
                name: "up", address: stub.url, username: "stub-user", password: "stub-secret-password")
            return (
                stub,
                try await ProxyProcess.start(
                    binDirectory: Tool.binDirectory, connectorsYAML: yaml, extraArguments: extraArguments)
            )
        } catch {
            stub.stop()
            throw error
        }
    }

    /// Headers only the proxy may see never reach the client, whichever way the answer is
    /// relayed: the connector's own credentials echoed back, `Proxy-Authorization`, cookies.
    @Test func credentialsAndCookiesInUpstreamAnswersAreWithheld() async throws {
        let (stub, proxy) = try await Self.proxyInFrontOfStub()
        defer { stub.stop(); proxy.stop() }
        let token = try proxy.token()
        let base = "http://\(proxy.host)/v2/namespaces/team-a/connectors/up/echo/app"
        let digest = sha256Digest(stub.blob)
        // HEAD and GET of a manifest (relayed as bytes), a blob GET (streamed on the event loop),
        // a tag list, and a read with a query (the responder).
        for (method, path) in [
            ("HEAD", "manifests/v1"), ("GET", "manifests/v1"), ("HEAD", "manifests/v1"),
            ("GET", "blobs/\(digest)"), ("GET", "tags/list"), ("GET", "tags/list?n=5"), ("GET", "manifests/v1?x=1"),
        ] {
            let response = try Curl.request(method, "\(base)/\(path)", token: token)
            #expect(response.status == 200, "\(method) \(path)")
            for name in ["Authorization", "Proxy-Authorization", "Set-Cookie"] {
                #expect(response.header(name) == nil, "\(method) \(path) relayed \(name): \(response.header(name) ?? "")")
            }
            #expect(!response.headers.contains { $0.1.contains("c3R1Yi11c2Vy") || $0.1.contains("stub-secret") })
        }
    }

    /// A 401 from the storage a blob read was redirected to reached the client as that origin's
    /// answer, and a redirect loop ended with a redirect back at the proxy.
    @Test func refusingStorageAndRedirectLoopsEndInAClearError() async throws {
        let (stub, proxy) = try await Self.proxyInFrontOfStub()
        defer { stub.stop(); proxy.stop() }
        let token = try proxy.token()
        let digest = sha256Digest(stub.blob)
        let base = "http://\(proxy.host)/v2/namespaces/team-a/connectors/up"
        for repository in ["storage-refusing/app", "loop/app", "storage-loop/app"] {
            for method in ["GET", "HEAD", "GET"] {
                let response = try Curl.request(method, "\(base)/\(repository)/blobs/\(digest)", token: token)
                #expect(response.status == 502, "\(method) \(repository): \(response.status) \(response.text)")
                #expect(response.header("Location") == nil)
                #expect(response.header("WWW-Authenticate") == nil)
                #expect(!response.text.contains("storage-says-no"))
                if method == "GET" {
                    #expect(response.text.contains(#""code":"UNAVAILABLE""#), "\(repository): \(response.text)")
                }
            }
        }
        let manifestLoop = try Curl.request("GET", "\(base)/loop/app/manifests/v1", token: token)
        #expect(manifestLoop.status == 502, "\(manifestLoop.status)")
        #expect(proxy.isRunning)
    }
}
