import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Child processes the tests start, ended when the test process exits, whatever happens.
enum ChildProcesses {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var pids: [pid_t] = []
    nonisolated(unsafe) private static var directories: [String] = []
    nonisolated(unsafe) private static var registered = false

    static func track(_ process: Process) {
        lock.lock()
        defer { lock.unlock() }
        pids.append(process.processIdentifier)
        registerCleanup()
    }

    /// Removes `url` when the test process exits (registries hold gigabytes after the big-blob test).
    static func removeAtExit(_ url: URL) {
        lock.lock()
        defer { lock.unlock() }
        directories.append(url.path)
        registerCleanup()
    }

    private static func registerCleanup() {
        if !registered {
            registered = true
            atexit {
                ChildProcesses.lock.lock()
                for pid in ChildProcesses.pids { kill(pid, SIGKILL) }
                for directory in ChildProcesses.directories {
                    SecretEvidence.keepLog(from: directory)
                    try? FileManager.default.removeItem(atPath: directory)
                }
                ChildProcesses.lock.unlock()
            }
        }
    }
}

/// Runs a command to completion and returns its standard output.
@discardableResult
public func runCommand(_ executable: String, _ arguments: [String], input: String? = nil) throws -> String {
    // For the secret search, a registry client shows all it saw of the proxy: URLs (locations
    // included), statuses and error messages.
    let recordsClient =
        SecretEvidence.isEnabled && SecretEvidence.clients.contains(URL(fileURLWithPath: executable).lastPathComponent)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = recordsClient ? ["--debug"] + arguments : arguments
    let output = Pipe()
    let errors = Pipe()
    process.standardOutput = output
    process.standardError = errors
    if let input {
        let stdin = Pipe()
        process.standardInput = stdin
        try process.run()
        // The throwing write: a command that exits without reading its input is its failure to
        // report, not a fatal error of the test process (the non-throwing one traps on EPIPE).
        try? stdin.fileHandleForWriting.write(contentsOf: Data(input.utf8))
        try? stdin.fileHandleForWriting.close()
    } else {
        try process.run()
    }
    let data = output.fileHandleForReading.readDataToEndOfFile()
    let errorData = errors.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    if recordsClient {
        SecretEvidence.keepClientOutput(data + errorData, commandLine: process.arguments?.joined(separator: " ") ?? "")
    }
    guard process.terminationStatus == 0 else {
        throw TestSupportError(
            "\(executable) \(arguments.joined(separator: " ")) failed: \(String(decoding: errorData, as: UTF8.self))")
    }
    return String(decoding: data, as: UTF8.self)
}

/// A failure of the test environment itself (not of the code under test).
public struct TestSupportError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Network helpers for loopback servers.
public enum Loopback {
    /// A TCP port on 127.0.0.1 that was free a moment ago.
    public static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestSupportError("socket() failed") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        guard bound else { throw TestSupportError("bind() failed") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Whether something accepts TCP connections on 127.0.0.1:`port`.
    public static func isListening(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }

    /// A fresh temporary directory.
    public static func temporaryDirectory(_ prefix: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        ChildProcesses.removeAtExit(url)
        return url
    }
}
