import Foundation

/// `Tests/Scripts/faulty_upstream.py`, running.
public final class FaultyUpstream: Sendable {
    /// The size of the blob every blob route promises.
    public static let blobSize = 8 << 20
    /// Its port on 127.0.0.1.
    public let port: Int
    /// A port on 127.0.0.1 whose listen queue is full: connecting to it hangs.
    public let unacceptingPort: Int
    private let process: Process

    private static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Scripts/faulty_upstream.py")

    private init(port: Int, unacceptingPort: Int, process: Process) {
        self.port = port
        self.unacceptingPort = unacceptingPort
        self.process = process
    }

    /// Starts it and waits for its port.
    public static func start() throws -> FaultyUpstream {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", Self.script.path]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        ChildProcesses.track(process)
        // Its first line is its ports; a byte at a time, so that nothing after it is read.
        var line = Data()
        while let byte = try output.fileHandleForReading.read(upToCount: 1)?.first, byte != UInt8(ascii: "\n") {
            line.append(byte)
        }
        let ports = String(decoding: line, as: UTF8.self).split(separator: " ").compactMap { Int($0) }
        guard ports.count == 2 else {
            process.terminate()
            throw TestSupportError("faulty_upstream.py did not print its ports")
        }
        return FaultyUpstream(port: ports[0], unacceptingPort: ports[1], process: process)
    }

    /// Stops it.
    public func stop() {
        process.terminate()
        process.waitUntilExit()
    }

    /// What a curl run got: its exit status, the answer's status and the bytes it received.
    public struct Outcome: CustomStringConvertible, Sendable {
        public var exit: Int32
        public var status: Int
        public var bytes: Int
        public var description: String { "curl exit \(exit), status \(status), \(bytes) bytes" }
    }

    /// Runs curl with `arguments` as the workload with `token`.
    public static func curl(_ arguments: [String], token: String) throws -> Outcome {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        // A bound on each run: a proxy that waits on a dead upstream fails the test instead of hanging it.
        process.arguments = ["-s", "-m", "30", "-u", "workload:\(token)", "-w", "%{http_code} %{size_download}"] + arguments
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let fields = String(decoding: data, as: UTF8.self).split(separator: " ")
        return Outcome(
            exit: process.terminationStatus, status: fields.first.flatMap { Int($0) } ?? 0,
            bytes: fields.dropFirst().first.flatMap { Int($0) } ?? 0)
    }
}
