import Foundation

/// A real CNCF Distribution registry (`docker-registry` from Debian) on loopback.
public final class TestRegistry: Sendable {
    /// How the registry authenticates clients.
    public enum Auth: Sendable {
        /// Anyone may pull and push.
        case anonymous
        /// htpasswd Basic auth with these users and passwords.
        case htpasswd([String: String])
        /// Distribution token auth, with tokens from `issuer`.
        case token(TokenIssuer)
    }

    /// The registry's port on 127.0.0.1.
    public let port: Int
    /// Where its configuration and storage live.
    public let directory: URL
    private let process: Process

    /// The PEM certificate it serves TLS with, when it does.
    public let certificatePEM: String?

    /// `http://127.0.0.1:PORT`, or `https://` when it serves TLS.
    public var url: String { "\(certificatePEM == nil ? "http" : "https")://127.0.0.1:\(port)" }
    /// `127.0.0.1:PORT`, as image references write it.
    public var host: String { "127.0.0.1:\(port)" }

    /// The registry executable: `docker-registry` (Debian), or `REGISTRY_BINARY`.
    static var binary: String {
        ProcessInfo.processInfo.environment["REGISTRY_BINARY"] ?? "/usr/bin/docker-registry"
    }

    private init(port: Int, directory: URL, process: Process, certificatePEM: String?) {
        self.certificatePEM = certificatePEM
        self.port = port
        self.directory = directory
        self.process = process
    }

    /// Starts a registry and waits until it accepts connections.
    /// With `tls`, it serves HTTPS with a self-signed certificate for 127.0.0.1 (see
    /// ``certificatePEM``), which no system trust store knows.
    public static func start(_ auth: Auth, tls: Bool = false) async throws -> TestRegistry {
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw TestSupportError("\(binary) is missing: run scripts/setup.sh (Debian package docker-registry)")
        }
        var lastError: (any Error)?
        for _ in 0..<5 {  // A port found free can be taken before the registry binds it.
            do {
                return try await attemptStart(auth, tls: tls)
            } catch {
                lastError = error
            }
        }
        throw lastError!
    }

    private static func attemptStart(_ auth: Auth, tls: Bool) async throws -> TestRegistry {
        let directory = try Loopback.temporaryDirectory("registry")
        let port = try Loopback.freePort()
        var tlsSection = ""
        var certificatePEM: String?
        if tls {
            let key = directory.appendingPathComponent("tls-key.pem")
            let certificate = directory.appendingPathComponent("tls-cert.pem")
            try runCommand(
                "/usr/bin/openssl",
                [
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key.path, "-out", certificate.path,
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                ])
            certificatePEM = try String(contentsOf: certificate, encoding: .utf8)
            tlsSection = """

                  tls:
                    certificate: \(certificate.path)
                    key: \(key.path)
                """
        }
        var authSection = ""
        switch auth {
        case .anonymous:
            break
        case .htpasswd(let users):
            var lines: [String] = []
            for (user, password) in users.sorted(by: { $0.key < $1.key }) {
                lines.append(
                    try runCommand("/usr/bin/htpasswd", ["-Bbn", user, password]).trimmingCharacters(in: .whitespacesAndNewlines))
            }
            let file = directory.appendingPathComponent("htpasswd")
            try lines.joined(separator: "\n").appending("\n").write(to: file, atomically: true, encoding: .utf8)
            authSection = """
                auth:
                  htpasswd:
                    realm: test-registry
                    path: \(file.path)
                """
        case .token(let issuer):
            authSection = """
                auth:
                  token:
                    realm: \(issuer.realm)
                    service: \(issuer.service)
                    issuer: \(issuer.issuerName)
                    rootcertbundle: \(issuer.certificateFile.path)
                """
        }
        let configuration = """
            version: 0.1
            log:
              level: error
              accesslog:
                disabled: true
            storage:
              filesystem:
                rootdirectory: \(directory.appendingPathComponent("storage").path)
              delete:
                enabled: true
              maintenance:
                uploadpurging:
                  enabled: false
            http:
              addr: 127.0.0.1:\(port)
              secret: test-registry-secret\(tlsSection)
            health:
              storagedriver:
                enabled: false
            \(authSection)
            """
        let configurationFile = directory.appendingPathComponent("config.yml")
        try configuration.write(to: configurationFile, atomically: true, encoding: .utf8)

        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["serve", configurationFile.path]
        process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        let log = directory.appendingPathComponent("registry.log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        process.standardError = try FileHandle(forWritingTo: log)
        try process.run()
        ChildProcesses.track(process)

        let deadline = ContinuousClock.now + .seconds(15)
        while ContinuousClock.now < deadline {
            if !process.isRunning {
                let output = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
                throw TestSupportError("docker-registry exited: \(output.suffix(500))")
            }
            if Loopback.isListening(port) {
                return TestRegistry(port: port, directory: directory, process: process, certificatePEM: certificatePEM)
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        process.terminate()
        throw TestSupportError("docker-registry did not start listening on \(port)")
    }

    /// Stops the registry and removes its files.
    public func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: directory)
    }
}
