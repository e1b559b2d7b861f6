import Foundation

/// A containerd daemon of the test's own, on a Unix socket in a temporary directory, for `ctr`
/// to pull and push through (it fetches registry tokens with the OAuth2 `POST` form first).
public final class Containerd: Sendable {
    public let socket: String
    private let process: Process

    /// Starts containerd and waits until `ctr version` reaches it.
    public static func start() async throws -> Containerd {
        // In /tmp: a socket's path must fit in 108 bytes.
        let directory = "/tmp/ctrd-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let socket = "\(directory)/containerd.sock"
        let config = """
            version = 2
            root = "\(directory)/root"
            state = "\(directory)/state"
            disabled_plugins = ["io.containerd.grpc.v1.cri"]
            [grpc]
              address = "\(socket)"
            """
        try config.write(toFile: "\(directory)/config.toml", atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/containerd")
        process.arguments = ["--config", "\(directory)/config.toml"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = try FileHandle(
            forWritingTo: {
                let log = URL(fileURLWithPath: "\(directory)/containerd.log")
                _ = FileManager.default.createFile(atPath: log.path, contents: nil)
                return log
            }())
        try process.run()
        ChildProcesses.track(process)
        let daemon = Containerd(socket: socket, process: process)
        for _ in 0..<100 {
            if (try? daemon.ctr(["version"])) != nil { return daemon }
            try await Task.sleep(for: .milliseconds(100))
        }
        daemon.stop()
        throw TestSupportError("containerd did not start")
    }

    private init(socket: String, process: Process) {
        self.socket = socket
        self.process = process
    }

    /// Runs `ctr` against this daemon.
    @discardableResult
    public func ctr(_ arguments: [String]) throws -> String {
        try runCommand("/usr/bin/ctr", ["--address", socket] + arguments)
    }

    public func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: URL(fileURLWithPath: socket).deletingLastPathComponent().path)
    }
}
