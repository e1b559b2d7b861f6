import Foundation
import OCIClientConfig
import OCIConnectors
import OCIReference
import Testing

@Suite("Rendering client configuration")
struct ClientConfigTests {
    static let golden = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Golden")

    static func config(proxy: String = "http://proxy.example:8080") throws -> ClientConfig {
        let connectors = try ConnectorCatalog.parse(
            yaml: """
                kind: Connector
                metadata: {name: harbor, namespace: team-a}
                spec: {address: https://harbor.example.com}
                ---
                kind: Connector
                metadata: {name: hub, namespace: team-b}
                spec: {address: https://index.docker.io}
                """
        ).connectors.values
        return try ClientConfig(connectors: Array(connectors), proxyURL: proxy, token: "TEST-TOKEN.payload.signature")
    }

    /// Every renderer against its golden file; `UPDATE_GOLDEN=1` rewrites them.
    @Test func matchesTheGoldenFiles() throws {
        let files = ClientConfigRenderer.render(try Self.config())
        let update = ProcessInfo.processInfo.environment["UPDATE_GOLDEN"] != nil
        for file in files {
            let url = Self.golden.appendingPathComponent(file.path.replacingOccurrences(of: "/", with: "__"))
            if update { try file.contents.write(to: url, atomically: true, encoding: .utf8) }
            let expected = try String(contentsOf: url, encoding: .utf8)
            #expect(file.contents == expected, "\(file.path) differs from its golden file")
        }
        let goldenNames = try FileManager.default.contentsOfDirectory(atPath: Self.golden.path).sorted()
        #expect(goldenNames == files.map { $0.path.replacingOccurrences(of: "/", with: "__") }.sorted())
    }

    @Test func renderingIsDeterministic() throws {
        let first = ClientConfigRenderer.render(try Self.config())
        for _ in 0..<5 { #expect(ClientConfigRenderer.render(try Self.config()) == first) }
    }

    @Test func everyTOMLAndJSONFileParses() throws {
        for proxy in ["http://proxy.example:8080", "https://proxy.example"] {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("render-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: directory) }
            let files = ClientConfigRenderer.render(try Self.config(proxy: proxy))
            try ConfigWriter.write(files, to: directory.path)
            for file in files where file.path.hasSuffix(".json") {
                let data = try Data(contentsOf: directory.appendingPathComponent(file.path))
                #expect(throws: Never.self) { try JSONSerialization.jsonObject(with: data) }
            }
            let tomls = files.filter { $0.path.hasSuffix(".toml") || $0.path == "registries.conf" }.map(\.path)
            #expect(tomls.count >= 5)
            try Python.tomlParse(tomls.map { directory.appendingPathComponent($0).path })
        }
    }

    /// With the proxy's CA, every client checks the proxy's certificate: the CA is written where
    /// docker, podman and containerd look for it, the files that name it by path point below
    /// the mount path, and nothing says insecure or skips verification.
    @Test func aTrustedCAReplacesInsecure() throws {
        var config = try Self.config(proxy: "https://proxy.example:8443")
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
        config.trust = ProxyTrust(certificatePEM: pem, mountPath: "/etc/oci-connector/")
        let files = Dictionary(uniqueKeysWithValues: ClientConfigRenderer.render(config).map { ($0.path, $0) })
        let ca = "/etc/oci-connector/certs.d/proxy.example:8443/ca.crt"
        #expect(config.caPath == ca)
        #expect(files["certs.d/proxy.example:8443/ca.crt"]?.contents == pem)
        #expect(files["certs.d/proxy.example:8443/ca.crt"]?.isSecret == false)
        #expect(files["buildkitd.toml"]?.contents.contains("ca = [\"\(ca)\"]") == true)
        #expect(files["certs.d/proxy.example:8443/hosts.toml"]?.contents.contains("ca = \"\(ca)\"") == true)
        #expect(files["certs.d/docker.io/hosts.toml"]?.contents.contains("ca = \"\(ca)\"") == true)
        #expect(files["daemon.json"]?.contents.contains("\"insecure-registries\": []") == true)
        #expect(files["flags"]?.contents.contains("skopeo --cert-dir '/etc/oci-connector/certs.d/proxy.example:8443'\n") == true)
        for (path, file) in files {
            for insecure in ["insecure = true", "skip_verify", "tls-verify=false", "--insecure", "http = true"] {
                #expect(!file.contents.contains(insecure), "\(path) says \(insecure)")
            }
        }
        // A plain-HTTP proxy has no certificate to check: the CA changes nothing.
        var plain = try Self.config()
        plain.trust = config.trust
        #expect(ClientConfigRenderer.render(plain) == ClientConfigRenderer.render(try Self.config()))
        // The TOML still parses.
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("render-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        try ConfigWriter.write(Array(files.values), to: directory.path)
        try Python.tomlParse(
            files.keys.filter { $0.hasSuffix(".toml") || $0 == "registries.conf" }.map {
                directory.appendingPathComponent($0).path
            })
    }

    @Test func tokenFilesAreWrittenForTheOwnerOnly() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("render-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        try ConfigWriter.write(ClientConfigRenderer.render(try Self.config()), to: directory.path)
        for (path, mode) in [
            ("config.json", 0o600), (".env", 0o600), ("context.token", 0o600), ("pull-secret.yaml", 0o600),
            ("buildkitd.toml", 0o644), ("registries.conf", 0o644),
        ] {
            let attributes = try FileManager.default.attributesOfItem(atPath: directory.appendingPathComponent(path).path)
            #expect((attributes[.posixPermissions] as? Int) == mode, "\(path)")
        }
        // The token appears only where it belongs.
        for path in ["buildkitd.toml", "registries.conf", "daemon.json", "flags", "connector.status.proxyAddress"] {
            let text = try String(contentsOf: directory.appendingPathComponent(path), encoding: .utf8)
            #expect(!text.contains("TEST-TOKEN"), "\(path)")
        }
    }

    @Test func selectionsMergeAndExclude() throws {
        let config = try Self.config()
        let paths = { (text: String) throws -> [String] in
            ClientConfigRenderer.render(config, selection: try Selection(parsing: text)).map(\.path)
        }
        #expect(
            try paths("registry-config") == [".env", "config.json", "connector.status.proxyAddress", "context.token", "flags"])
        #expect(try paths("registry-config,!context.token,!flags") == [".env", "config.json", "connector.status.proxyAddress"])
        let merged = ClientConfigRenderer.render(config, selection: try Selection(parsing: "containers,mirror"))
        let registries = try #require(merged.first { $0.path == "registries.conf" })
        #expect(registries.contents.components(separatedBy: "[[registry]]").count - 1 == 3)
        #expect(try paths("!mirror").contains { $0.hasPrefix("certs.d/harbor") } == false)
        #expect(throws: ReferenceError.self) { try Selection(parsing: "registry-config,unknown") }
        #expect(throws: ReferenceError.self) { try Selection(parsing: "!nothing.txt") }
        // No insecure-entitlements, ever.
        #expect(!ClientConfigRenderer.render(config).contains { $0.contents.contains("insecure-entitlements") })
    }
}

/// Python's `tomllib`, a real TOML parser, on the machine.
enum Python {
    static func tomlParse(_ paths: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments =
            ["python3", "-c", "import sys, tomllib\nfor p in sys.argv[1:]:\n    tomllib.load(open(p, 'rb'))"] + paths
        let errors = Pipe()
        process.standardError = errors
        try process.run()
        process.waitUntilExit()
        let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationStatus == 0, "tomllib: \(message)")
    }
}
