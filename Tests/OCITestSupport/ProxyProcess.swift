import Foundation

/// The built `oci-connector-proxy`, started as a workload's platform team would run it, with
/// fresh token keys.
public final class ProxyProcess: Sendable {
    public let port: Int
    /// The admin listener's port, when started with `--admin-listen`.
    public let adminPort: Int?
    public let directory: URL
    private let process: Process
    /// The folder with the built executables.
    public let binDirectory: URL

    /// `127.0.0.1:PORT`.
    public var host: String { "127.0.0.1:\(port)" }
    /// The signing key's path.
    public var signingKey: String { directory.appendingPathComponent("keys/signing-key.jwk").path }
    /// Where the proxy writes its log.
    public var logFile: URL { directory.appendingPathComponent("proxy.log") }

    /// Starts a proxy in front of the connectors in `connectorsYAML`; `softOpenFileLimit` starts
    /// it with that soft limit on open files, as a container runtime may.
    public static func start(
        binDirectory: URL, connectorsYAML: String, extraArguments: [String] = [], softOpenFileLimit: Int? = nil
    ) async throws -> ProxyProcess {
        let directory = try Loopback.temporaryDirectory("proxy")
        let connectors = directory.appendingPathComponent("connectors.yaml")
        try connectorsYAML.write(to: connectors, atomically: true, encoding: .utf8)
        try runCommand(
            binDirectory.appendingPathComponent("oci-connector-config").path,
            ["keys", "generate", "--out", directory.appendingPathComponent("keys").path])

        let process = Process()
        let executable = binDirectory.appendingPathComponent("oci-connector-proxy")
        let arguments =
            [
                "--connectors", connectors.path, "--listen", "127.0.0.1:0",
                "--token-keys", directory.appendingPathComponent("keys/verification-key.jwk").path,
            ] + extraArguments
        if let softOpenFileLimit {
            // The shell sets the limit and becomes the proxy (same process id).
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = ["-c", "ulimit -Sn \(softOpenFileLimit) && exec \"$0\" \"$@\"", executable.path] + arguments
        } else {
            process.executableURL = executable
            process.arguments = arguments
        }
        let output = Pipe()
        process.standardOutput = output
        let log = directory.appendingPathComponent("proxy.log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        process.standardError = try FileHandle(forWritingTo: log)
        try process.run()
        ChildProcesses.track(process)

        // The proxy prints "listening on HOST:PORT" once it is serving, last; before it, with
        // `--admin-listen`, "admin listening on HOST:PORT".
        let lines = await Task.detached { () -> [Substring] in
            var data = Data()
            while !String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
                .dropLast().contains(where: { $0.hasPrefix("listening on ") })
            {
                let chunk = output.fileHandleForReading.availableData
                if chunk.isEmpty { break }
                data += chunk
            }
            return String(decoding: data, as: UTF8.self).split(separator: "\n")
        }.value
        func announcedPort(after prefix: String) -> Int? {
            lines.first { $0.hasPrefix(prefix) }.flatMap { line in line.split(separator: ":").last.flatMap { Int($0) } }
        }
        let line = lines.joined(separator: "\n")
        guard let port = announcedPort(after: "listening on ") else {
            let logText = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            throw TestSupportError("the proxy did not start: \(line) \(logText.suffix(800))")
        }
        return ProxyProcess(
            port: port, adminPort: announcedPort(after: "admin listening on "), directory: directory, process: process,
            binDirectory: binDirectory)
    }

    private init(port: Int, adminPort: Int?, directory: URL, process: Process, binDirectory: URL) {
        self.port = port
        self.adminPort = adminPort
        self.directory = directory
        self.process = process
        self.binDirectory = binDirectory
    }

    /// Mints a token with `oci-connector-config token`.
    public func token(
        connector: String = "team-a/up", actions: String = "pull,push,delete", ttl: String = "30m",
        signingKey: String? = nil, repository: String? = nil, subject: String? = nil
    ) throws -> String {
        let token = try runCommand(
            binDirectory.appendingPathComponent("oci-connector-config").path,
            [
                "token", "--connector", connector, "--actions", actions, "--ttl", ttl, "--signing-key",
                signingKey ?? self.signingKey,
            ] + (repository.map { ["--repository", $0] } ?? []) + (subject.map { ["--subject", $0] } ?? [])
        ).trimmingCharacters(in: .whitespacesAndNewlines)
        SecretEvidence.record(token)
        return token
    }

    /// When a proxy token expires (its `exp` claim): the proxy refuses it from that second on.
    public static func expiry(of token: String) throws -> Date {
        let parts = token.split(separator: ".")
        guard parts.count == 3 else { throw TestSupportError("the token is not a JWT") }
        var payload = String(parts[1]).replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while payload.count % 4 != 0 { payload += "=" }
        guard let data = Data(base64Encoded: payload),
            let claims = try JSONSerialization.jsonObject(with: data) as? [String: Any],
            let expiry = claims["exp"] as? TimeInterval
        else { throw TestSupportError("the token has no exp claim") }
        return Date(timeIntervalSince1970: expiry)
    }

    /// Waits until `token` has expired, which is at most its lifetime away.
    public static func waitUntilExpired(_ token: String) async throws {
        let expiry = try expiry(of: token)
        while Date() < expiry { try await Task.sleep(for: .milliseconds(20)) }
    }

    /// The remote ports of the TCP connections the proxy holds open, read from `/proc` (Linux).
    public var connectedPorts: Set<Int> { Set(connections.map(\.remote)) }

    /// The local and remote ports of the TCP connections the proxy holds open (established),
    /// read from `/proc` (Linux).
    public var connections: [(local: Int, remote: Int)] {
        let pid = process.processIdentifier
        // A socket's descriptor links to `socket:[INODE]`; the TCP tables name sockets by inode.
        let inodes = Set(
            (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd"))?.compactMap { name -> Substring? in
                guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(name)"),
                    target.hasPrefix("socket:[")
                else { return nil }
                return target.dropFirst("socket:[".count).dropLast()
            } ?? [])
        var connections: [(local: Int, remote: Int)] = []
        for table in ["tcp", "tcp6"] {
            // Read to the end: `String(contentsOfFile:)` gets only the first page of a `/proc` file.
            let data = FileHandle(forReadingAtPath: "/proc/\(pid)/net/\(table)")?.readDataToEndOfFile() ?? Data()
            let text = String(decoding: data, as: UTF8.self)
            // Fields: sl, local_address, rem_address (hex address:port), st (01: established), five
            // more, then the inode.
            for line in text.split(separator: "\n").dropFirst() {
                let fields = line.split(separator: " ")
                guard fields.count > 9, fields[3] == "01", inodes.contains(fields[9]),
                    let local = fields[1].split(separator: ":").last.flatMap({ Int($0, radix: 16) }),
                    let remote = fields[2].split(separator: ":").last.flatMap({ Int($0, radix: 16) })
                else { continue }
                connections.append((local, remote))
            }
        }
        return connections
    }

    /// How many file descriptors the proxy has open.
    public var openDescriptors: Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(process.processIdentifier)/fd"))?.count ?? 0
    }

    /// Waits until the proxy holds a connection to `port` on this machine (an upstream it has
    /// begun to ask), for at most `timeout`; whether it does.
    public func waitForConnection(toPort port: Int, timeout: Duration = .seconds(10)) async throws -> Bool {
        let deadline = ContinuousClock.now + timeout
        while !connectedPorts.contains(port) {
            guard ContinuousClock.now < deadline else { return false }
            try await Task.sleep(for: .milliseconds(5))
        }
        return true
    }

    /// The proxy's peak resident memory so far, in KiB.
    public var peakResidentKiB: Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8) else {
            return nil
        }
        return status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") }
            .flatMap { Int($0.split(separator: " ").dropFirst().first ?? "") }
    }

    /// The first line of the proxy's log that contains `text`, waiting up to `attempts` tenths of
    /// a second for it (the proxy writes a request's line when its response ends).
    public func logLine(containing text: String, attempts: Int = 100) async throws -> Substring? {
        for _ in 0..<attempts {
            try await Task.sleep(for: .milliseconds(100))
            if let line = try String(contentsOf: logFile, encoding: .utf8).split(separator: "\n").first(where: {
                $0.contains(text)
            }) {
                return line
            }
        }
        return nil
    }

    /// The proxy's process id, to send it signals.
    public var processIdentifier: Int32 { process.processIdentifier }

    /// Whether the proxy has exited.
    public var isRunning: Bool { process.isRunning }

    /// The proxy's exit status once it has exited, `nil` while it runs. (Foundation's own
    /// `terminationStatus` is a fatal error while the process runs: it would end the whole test
    /// process for one proxy that is slow to stop.)
    public var terminationStatus: Int32? { process.isRunning ? nil : process.terminationStatus }

    /// Waits up to `timeout` for the proxy to exit; its exit status, or `nil` if it still runs.
    public func exitStatus(within timeout: Duration) async throws -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        return terminationStatus
    }

    /// Sends the proxy SIGTERM and returns at once, to see what it does while it stops.
    public func terminate() {
        process.terminate()
    }

    public func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
    }
}
