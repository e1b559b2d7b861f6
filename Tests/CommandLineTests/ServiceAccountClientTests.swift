import Foundation
import OCITestSupport
import Testing

/// What a workload or a node uses with a service account token instead of a minted one:
/// `render --identity service-account`, the docker credential helper, and the kubelet credential
/// provider, each driving a real client through the proxy.
@Suite("Service account tokens in workloads and on nodes", .serialized)
struct ServiceAccountClientTests {
    /// A proxy trusting `cluster`'s tokens, in front of an anonymous registry, and a binding that
    /// lets `team-a/builder` pull and push `sa-client/*` through `team-a/up`.
    static func start() async throws -> (ProxyProcess, TestRegistry, KubernetesTokenIssuer) {
        let registry = try await SharedRegistries.shared.anonymous()
        let cluster = try await KubernetesTokenIssuer.start()
        let yaml =
            ConnectorYAML.connector(name: "up", address: registry.url) + """
                ---
                apiVersion: oci-connector.dev/v1alpha1
                kind: ConnectorBinding
                metadata: {name: builders, namespace: team-a}
                spec:
                  connectors: [up]
                  subjects: [{kind: ServiceAccount, name: builder}]
                  actions: [pull, push]
                  repositories: ["sa-client/**"]
                """
        let proxy = try await ProxyProcess.start(
            binDirectory: Tool.binDirectory, connectorsYAML: yaml, extraArguments: ["--service-account-issuer", cluster.url])
        return (proxy, registry, cluster)
    }

    /// A projected token volume as kubelet lays it out: `token` → `..data/token`, `..data` → a
    /// timestamped directory; replacing the token swaps `..data` in one rename.
    struct ProjectedVolume {
        let directory: URL
        var tokenFile: URL { directory.appendingPathComponent("token") }

        init(token: String) throws {
            directory = try Loopback.temporaryDirectory("projected")
            try place(token)
            try FileManager.default.createSymbolicLink(atPath: tokenFile.path, withDestinationPath: "..data/token")
        }

        func place(_ token: String) throws {
            let version = "..\(UUID().uuidString.prefix(8))"
            let versionDirectory = directory.appendingPathComponent(version)
            try FileManager.default.createDirectory(at: versionDirectory, withIntermediateDirectories: true)
            try token.write(to: versionDirectory.appendingPathComponent("token"), atomically: true, encoding: .utf8)
            let temporary = directory.appendingPathComponent("..data_tmp").path
            try? FileManager.default.removeItem(atPath: temporary)
            try FileManager.default.createSymbolicLink(atPath: temporary, withDestinationPath: version)
            guard rename(temporary, directory.appendingPathComponent("..data").path) == 0 else {
                throw TestSupportError("cannot swap ..data")
            }
        }
    }

    @Test func renderWritesTheServiceAccountTokenAndFollowsKubeletsRotation() async throws {
        let (proxy, registry, cluster) = try await Self.start()
        defer { proxy.stop(); cluster.stop() }
        try Seeder.pushReturningImage(to: registry, repository: "sa-client/src")
        let first = cluster.token(namespace: "team-a", serviceAccount: "builder")
        let volume = try ProjectedVolume(token: first)
        let output = try Loopback.temporaryDirectory("render-sa")
        let connectors = proxy.directory.appendingPathComponent("connectors.yaml").path
        let arguments = [
            "render", "--connectors", connectors, "--connector", "team-a/up", "--proxy", "http://\(proxy.host)",
            "--output", output.path, "--identity", "service-account", "--token-file", volume.tokenFile.path,
        ]
        // No key near the workload: a signing key is refused with this identity.
        let keyed = try Tool.run(["oci-connector-config"] + arguments + ["--signing-key", proxy.signingKey])
        #expect(keyed.status != 0 && keyed.stderr.contains("--signing-key is not needed"), "\(keyed.stderr)")
        let missing = try Tool.run(["oci-connector-config"] + arguments.dropLast(2) + ["--token-file", "/nonexistent/token"])
        #expect(missing.status != 0 && missing.stderr.contains("cannot read the service account token"), "\(missing.stderr)")

        let watcher = Process()
        watcher.executableURL = Tool.binDirectory.appendingPathComponent("oci-connector-config")
        watcher.arguments = arguments + ["--watch"]
        try watcher.run()
        defer { if watcher.isRunning { watcher.terminate() } }
        let contextToken = output.appendingPathComponent("context.token")
        #expect(
            try await RenderCommandTests.waitForChange(of: contextToken, from: "", until: Date(timeIntervalSinceNow: 20)) == first
        )
        let authfile = output.appendingPathComponent("config.json").path
        let prefix = "\(proxy.host)/namespaces/team-a/connectors/up"
        let common = ["--authfile", authfile, "--registries-conf", output.appendingPathComponent("registries.conf").path]
        try runCommand(
            "/usr/bin/skopeo", ["copy"] + common + ["docker://\(prefix)/sa-client/src:v1", "docker://\(prefix)/sa-client/a:v1"])

        // kubelet replaces the token: the files follow, and the new token works.
        let second = cluster.token(namespace: "team-a", serviceAccount: "builder", issuedAt: Date() + 1)
        try volume.place(second)
        #expect(
            try await RenderCommandTests.waitForChange(of: contextToken, from: first, until: Date(timeIntervalSinceNow: 20))
                == second)
        #expect(try Self.password(in: authfile, for: proxy.host) == second)
        try runCommand(
            "/usr/bin/skopeo", ["copy"] + common + ["docker://\(prefix)/sa-client/src:v1", "docker://\(prefix)/sa-client/b:v1"])
        watcher.terminate()
        watcher.waitUntilExit()
        #expect(watcher.terminationReason == .exit && watcher.terminationStatus == 0)
        let log = try String(contentsOf: proxy.logFile, encoding: .utf8)
        #expect(log.contains("identity=system:serviceaccount:team-a:builder"))
    }

    /// The password `config.json` gives for `host`.
    static func password(in authfile: String, for host: String) throws -> String? {
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: authfile))) as? [String: Any]
        let entry = (config?["auths"] as? [String: Any])?[host] as? [String: Any]
        guard let auth = entry?["auth"] as? String, let data = Data(base64Encoded: auth) else { return nil }
        let pair = String(decoding: data, as: UTF8.self)
        return pair.firstIndex(of: ":").map { String(pair[pair.index(after: $0)...]) }
    }

    /// skopeo with `credHelpers` runs `docker-credential-oci-connector get`, which reads the
    /// token file on every call.
    @Test func theDockerCredentialHelperAnswersTheTokenFile() async throws {
        let (proxy, registry, cluster) = try await Self.start()
        defer { proxy.stop(); cluster.stop() }
        try Seeder.pushReturningImage(to: registry, repository: "sa-client/helper")
        let directory = try Loopback.temporaryDirectory("cred-helper")
        let bin = directory.appendingPathComponent("bin")
        try FileManager.default.createDirectory(at: bin, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(
            atPath: bin.appendingPathComponent("docker-credential-oci-connector").path,
            withDestinationPath: Tool.binDirectory.appendingPathComponent("oci-connector-config").path)
        let tokenFile = directory.appendingPathComponent("token")
        let token = cluster.token(namespace: "team-a", serviceAccount: "builder")
        try token.write(to: tokenFile, atomically: true, encoding: .utf8)
        let authfile = directory.appendingPathComponent("auth.json")
        try #"{"credHelpers": {"\#(proxy.host)": "oci-connector"}}"#.write(to: authfile, atomically: true, encoding: .utf8)
        let environment = [
            "PATH=\(bin.path):\(ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")",
            "OCI_CONNECTOR_TOKEN_FILE=\(tokenFile.path)",
        ]

        // The protocol itself.
        let answer = try runCommand("/usr/bin/env", environment + ["docker-credential-oci-connector", "get"], input: proxy.host)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(answer.utf8)) as? [String: String])
        #expect(json["ServerURL"] == proxy.host && json["Secret"] == token && json["Username"] == "oci-connector")
        #expect(try runCommand("/usr/bin/env", environment + ["docker-credential-oci-connector", "list"]).contains("{}"))

        // A real client using it.
        let prefix = "\(proxy.host)/namespaces/team-a/connectors/up"
        try runCommand(
            "/usr/bin/env",
            environment + [
                "skopeo", "copy", "--authfile", authfile.path, "--src-tls-verify=false", "--dest-tls-verify=false",
                "docker://\(prefix)/sa-client/helper:v1", "docker://\(prefix)/sa-client/helped:v1",
            ])
        let log = try String(contentsOf: proxy.logFile, encoding: .utf8)
        #expect(log.contains("repository=sa-client/helped") && log.contains("identity=system:serviceaccount:team-a:builder"))
        // A file that holds no token: a clear error, not a credential.
        try "not a token".write(to: tokenFile, atomically: true, encoding: .utf8)
        #expect(throws: (any Error).self) {
            try runCommand("/usr/bin/env", environment + ["docker-credential-oci-connector", "get"], input: proxy.host)
        }
    }

    /// kubelet's protocol: a request on stdin with the pod's token, an answer for the image's
    /// registry and the proxy, cached for less than the token has left; skopeo pulls with it.
    @Test func theKubeletCredentialProviderAnswersThePodsToken() async throws {
        let (proxy, registry, cluster) = try await Self.start()
        defer { proxy.stop(); cluster.stop() }
        try Seeder.pushReturningImage(to: registry, repository: "sa-client/pod")
        let token = cluster.token(namespace: "team-a", serviceAccount: "builder", lifetime: 600)
        let request = """
            {"apiVersion": "credentialprovider.kubelet.k8s.io/v1", "kind": "CredentialProviderRequest",
             "image": "\(registry.host)/sa-client/pod:v1", "serviceAccountToken": "\(token)",
             "serviceAccountAnnotations": {}}
            """
        let output = try runCommand(
            Tool.binDirectory.appendingPathComponent("oci-connector-config").path,
            ["credential-provider", "--proxy", proxy.host], input: request)
        let response = try #require(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any])
        #expect(response["kind"] as? String == "CredentialProviderResponse")
        #expect(response["apiVersion"] as? String == "credentialprovider.kubelet.k8s.io/v1")
        let cache = try #require((response["cacheDuration"] as? String).flatMap { Int($0.dropLast()) })
        #expect(cache > 0 && cache < 600)
        let auth = try #require(response["auth"] as? [String: [String: String]])
        #expect(auth[registry.host]?["password"] == token)
        let credentials = try #require(auth[proxy.host])
        let prefix = "\(proxy.host)/namespaces/team-a/connectors/up"
        let inspected = try runCommand(
            "/usr/bin/skopeo",
            [
                "inspect", "--tls-verify=false", "--creds", "\(credentials["username"]!):\(credentials["password"]!)",
                "docker://\(prefix)/sa-client/pod:v1",
            ])
        #expect(inspected.contains("sa-client/pod"))
        // Bad requests: a clear message.
        #expect(throws: (any Error).self) {
            try runCommand(
                Tool.binDirectory.appendingPathComponent("oci-connector-config").path, ["credential-provider"], input: "{}")
        }
    }
}
