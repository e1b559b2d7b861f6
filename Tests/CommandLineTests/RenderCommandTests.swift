import Foundation
import OCITestSupport
import Testing

/// `oci-connector-config render`, then real clients using nothing but the rendered files.
@Suite("oci-connector-config render", .serialized)
struct RenderCommandTests {
    static func setUp() async throws -> (ProxyProcess, TestRegistry, URL) {
        let registry = try await SharedRegistries.shared.anonymous()
        let proxy = try await ProxyProcess.start(
            binDirectory: Tool.binDirectory, connectorsYAML: ConnectorYAML.connector(name: "up", address: registry.url))
        let output = try Loopback.temporaryDirectory("render")
        return (proxy, registry, output)
    }

    static func render(_ proxy: ProxyProcess, _ output: URL, _ extra: [String] = []) throws -> Tool.Result {
        try Tool.run(
            [
                "oci-connector-config", "render", "--connectors", proxy.directory.appendingPathComponent("connectors.yaml").path,
                "--connector", "team-a/up", "--proxy", "http://\(proxy.host)", "--signing-key", proxy.signingKey,
                "--output", output.path, "--actions", "pull,push",
            ] + extra)
    }

    @Test func skopeoUsesTheRenderedFilesInBothModes() async throws {
        let (proxy, registry, output) = try await Self.setUp()
        defer { proxy.stop() }
        let rendered = try Self.render(proxy, output)
        #expect(rendered.status == 0, "\(rendered.stderr)")
        try Seeder.pushReturningImage(to: registry, repository: "render/src")
        let authfile = output.appendingPathComponent("config.json").path
        let registriesConf = output.appendingPathComponent("registries.conf").path

        // Rewritten references: the proxy address from connector.status.proxyAddress, the
        // credentials from config.json, plain HTTP from registries.conf. No flags, no token on the
        // command line.
        let address = try String(contentsOf: output.appendingPathComponent("connector.status.proxyAddress"), encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines).replacingOccurrences(of: "http://", with: "")
        let common = ["--authfile", authfile, "--registries-conf", registriesConf]
        try runCommand(
            "/usr/bin/skopeo",
            ["copy"] + common + ["docker://\(address)/render/src:v1", "docker://\(address)/render/rewritten:v1"])
        let tags = try runCommand("/usr/bin/skopeo", ["list-tags"] + common + ["docker://\(address)/render/rewritten"])
        #expect(tags.contains("\"v1\""))

        // Mirror mode: the original upstream names, resolved through the proxy by registries.conf.
        try runCommand(
            "/usr/bin/skopeo",
            ["copy"] + common + [
                "docker://\(registry.host)/render/src:v1", "docker://\(registry.host)/render/mirrored:v1",
            ])
        let inspected = try runCommand("/usr/bin/skopeo", ["inspect"] + common + ["docker://\(registry.host)/render/mirrored:v1"])
        #expect(inspected.contains("render/mirrored"))
        let log = try String(contentsOf: proxy.logFile, encoding: .utf8)
        #expect(log.contains("repository=render/mirrored"), "the mirror-mode push did not go through the proxy")
        #expect(log.contains("repository=render/rewritten"))
    }

    /// An https proxy with `--ca-file`: skopeo and podman check the proxy's certificate with nothing but the
    /// rendered files (the CA directory the `flags` file names), in both modes; and a CA for a
    /// plain-HTTP proxy is refused.
    @Test func skopeoVerifiesTheProxyWithTheRenderedCA() async throws {
        let registry = try await SharedRegistries.shared.anonymous()
        let directory = try Loopback.temporaryDirectory("render-tls")
        let pair = try ProxyOperationsTests.certificate(in: directory, name: "render-proxy")
        let proxy = try await ProxyProcess.start(
            binDirectory: Tool.binDirectory, connectorsYAML: ConnectorYAML.connector(name: "up", address: registry.url),
            extraArguments: ["--tls-cert", pair.certificate.path, "--tls-key", pair.key.path])
        defer { proxy.stop() }
        let output = try Loopback.temporaryDirectory("render")
        let rendered = try Tool.run(
            [
                "oci-connector-config", "render", "--connectors", proxy.directory.appendingPathComponent("connectors.yaml").path,
                "--connector", "team-a/up", "--proxy", "https://\(proxy.host)", "--signing-key", proxy.signingKey,
                "--output", output.path, "--actions", "pull,push", "--ca-file", pair.certificate.path,
            ])
        #expect(rendered.status == 0, "\(rendered.stderr)")
        let repository = "render-tls-\(UInt32.random(in: 0...UInt32.max))"
        try Seeder.pushReturningImage(to: registry, repository: "\(repository)/src")

        let flags = try String(contentsOf: output.appendingPathComponent("flags"), encoding: .utf8)
        let skopeoLine = try #require(flags.split(separator: "\n").first { $0.hasPrefix("skopeo ") })
        let certificateDirectory = String(skopeoLine.dropFirst("skopeo --cert-dir ".count)).replacingOccurrences(
            of: "'", with: "")
        #expect(certificateDirectory == output.appendingPathComponent("certs.d/\(proxy.host)").path)
        let common = [
            "--authfile", output.appendingPathComponent("config.json").path, "--registries-conf",
            output.appendingPathComponent("registries.conf").path,
        ]
        let address = "\(proxy.host)/namespaces/team-a/connectors/up"
        try runCommand(
            "/usr/bin/skopeo",
            ["copy"] + common + ["--src-cert-dir", certificateDirectory, "--dest-cert-dir", certificateDirectory]
                + ["docker://\(address)/\(repository)/src:v1", "docker://\(address)/\(repository)/copy:v1"])
        // podman trusts the proxy the same way, with the rendered CA and no --tls-verify=false;
        // without the CA it refuses the proxy's certificate.
        let storage = try Loopback.temporaryDirectory("podman-tls")
        let podman = [
            "--root", storage.appendingPathComponent("root").path, "--runroot", storage.appendingPathComponent("run").path,
            "--storage-driver", "vfs",
        ]
        let authfile = ["--authfile", output.appendingPathComponent("config.json").path]
        let context = storage.appendingPathComponent("hello.txt")
        try "trusted".write(to: context, atomically: true, encoding: .utf8)
        let container = try runCommand("/usr/bin/buildah", podman + ["from", "scratch"]).trimmingCharacters(
            in: .whitespacesAndNewlines)
        try runCommand("/usr/bin/buildah", podman + ["copy", container, context.path, "/hello.txt"])
        try runCommand("/usr/bin/buildah", podman + ["commit", container, "localhost/tls-check:v1"])
        let pushed = "\(address)/\(repository)/podman:v1"
        #expect(throws: (any Error).self) {
            try runCommand("/usr/bin/podman", podman + ["push"] + authfile + ["localhost/tls-check:v1", "docker://\(pushed)"])
        }
        try runCommand(
            "/usr/bin/podman",
            podman + ["push"] + authfile + ["--cert-dir", certificateDirectory, "localhost/tls-check:v1", "docker://\(pushed)"])
        try runCommand("/usr/bin/podman", podman + ["rmi", "localhost/tls-check:v1"])
        try runCommand("/usr/bin/podman", podman + ["pull"] + authfile + ["--cert-dir", certificateDirectory, pushed])
        // Mirror mode: the registry's own name, sent to the https proxy by registries.conf.
        let inspected = try runCommand(
            "/usr/bin/skopeo",
            // Tags are listed from the named registry itself, not its mirrors: not asked for.
            ["inspect", "--no-tags"] + common + [
                "--cert-dir", certificateDirectory, "docker://\(registry.host)/\(repository)/copy:v1",
            ])
        #expect(inspected.contains("\(repository)/copy"))
        let log = try String(contentsOf: proxy.logFile, encoding: .utf8)
        #expect(log.contains("repository=\(repository)/copy"), "the copy did not go through the proxy")
        #expect(log.contains("repository=\(repository)/podman"), "podman's push did not go through the proxy")
        #expect(
            log.split(separator: "\n").filter { $0.contains("repository=\(repository)/copy") && $0.contains("method=GET") }
                .count >= 2, "the mirror-mode read did not go through the proxy")

        let plain = try Self.render(proxy, try Loopback.temporaryDirectory("render"), ["--ca-file", pair.certificate.path])
        #expect(plain.status != 0 && plain.stderr.contains("--ca-file is for an https proxy"), "\(plain.stderr)")
        let key = try Tool.run(
            [
                "oci-connector-config", "render", "--connectors", proxy.directory.appendingPathComponent("connectors.yaml").path,
                "--connector", "team-a/up", "--proxy", "https://\(proxy.host)", "--signing-key", proxy.signingKey,
                "--output", output.path, "--ca-file", pair.key.path,
            ])
        #expect(key.status != 0 && key.stderr.contains("is not a PEM certificate"), "\(key.stderr)")
    }

    @Test func aRenderedTokenExpiresAndWatchReplacesItInTime() async throws {
        let (proxy, _, output) = try await Self.setUp()
        defer { proxy.stop() }
        let tokenFile = output.appendingPathComponent("context.token")

        // --ttl: the token stops working when it should.
        #expect(try Self.render(proxy, output, ["--ttl", "2s"]).status == 0)
        let shortLived = try String(contentsOf: tokenFile, encoding: .utf8)
        #expect(try Curl.request("GET", "http://\(proxy.host)/v2/", token: shortLived).status == 200)
        #expect(try await Self.statusOnceRefused(shortLived, by: proxy) == 401)

        // --watch: replaced at 80% of a 40 s lifetime (about 8 s to spare: with 2 s, and once
        // with 4 s, a test run on two busy cores starved the watcher past the expiry), the
        // replacement works, SIGTERM stops it cleanly.
        let watcher = Process()
        watcher.executableURL = Tool.binDirectory.appendingPathComponent("oci-connector-config")
        watcher.arguments = [
            "render", "--connectors", proxy.directory.appendingPathComponent("connectors.yaml").path, "--connector", "team-a/up",
            "--proxy", "http://\(proxy.host)", "--signing-key", proxy.signingKey, "--output", output.path,
            "--ttl", "40s", "--watch",
        ]
        try watcher.run()
        // Times come from the token itself, not from when the watcher happened to start.
        let first = try await Self.waitForChange(of: tokenFile, from: shortLived, until: Date(timeIntervalSinceNow: 20))
        #expect(first != shortLived)
        let second = try await Self.waitForChange(of: tokenFile, from: first, until: try ProxyProcess.expiry(of: first))
        #expect(second != first, "the token was not re-rendered before it expired")
        #expect(try await Self.statusOnceRefused(first, by: proxy) == 401)
        #expect(
            try Curl.request("GET", "http://\(proxy.host)/v2/", token: try String(contentsOf: tokenFile, encoding: .utf8)).status
                == 200)
        watcher.terminate()
        watcher.waitUntilExit()
        #expect(watcher.terminationReason == .exit && watcher.terminationStatus == 0)
    }

    /// The file's content once it differs from `old`, or `old` if `deadline` passes first.
    static func waitForChange(of file: URL, from old: String, until deadline: Date) async throws -> String {
        while Date() < deadline {
            if let now = try? String(contentsOf: file, encoding: .utf8), now != old { return now }
            try await Task.sleep(for: .milliseconds(50))
        }
        return old
    }

    /// The status the proxy answers `GET /v2/` with `token` once it stops answering 200, asking
    /// until 30 s past the token's expiry (`nil` if it never stops). Each answer is checked
    /// against the expiry: 200 only for a request sent before it, a refusal only after it.
    static func statusOnceRefused(_ token: String, by proxy: ProxyProcess) async throws -> Int? {
        let expiry = try ProxyProcess.expiry(of: token)
        while Date() < expiry + 30 {
            let sent = Date()
            let status = try Curl.request("GET", "http://\(proxy.host)/v2/", token: token).status
            guard status == 200 else {
                #expect(Date() >= expiry, "the token was refused before it expired")
                return status
            }
            #expect(sent < expiry, "the token was taken after it expired")
            try await Task.sleep(for: .milliseconds(100))
        }
        return nil
    }

    @Test func unknownSelectionsAreErrors() async throws {
        let (proxy, _, output) = try await Self.setUp()
        defer { proxy.stop() }
        let result = try Self.render(proxy, output, ["--select", "registry-config,kubeconfig"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("unknown selection kubeconfig"))
    }
}
