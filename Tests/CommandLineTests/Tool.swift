import Foundation

/// Finds and runs the package's built executables.
enum Tool {
    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// The folder holding the built products: beside the test bundle, or `OCI_CONNECTOR_BIN`.
    static var binDirectory: URL {
        if let override = ProcessInfo.processInfo.environment["OCI_CONNECTOR_BIN"] {
            return URL(fileURLWithPath: override)
        }
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        // The bundle may be a directory (.xctest) inside the products folder.
        while !FileManager.default.fileExists(atPath: directory.appendingPathComponent("oci-connector-config").path),
            directory.path != "/"
        {
            directory.deleteLastPathComponent()
        }
        return directory
    }

    static func run(_ executable: String, _ arguments: String...) throws -> Result {
        try run([executable] + arguments)
    }

    static func run(_ command: [String]) throws -> Result {
        let executable = command[0]
        let arguments = Array(command.dropFirst())
        let process = Process()
        process.executableURL = binDirectory.appendingPathComponent(executable)
        process.arguments = arguments
        let stdout = Pipe()
        let stderr = Pipe()
        process.standardOutput = stdout
        process.standardError = stderr
        try process.run()
        let out = stdout.fileHandleForReading.readDataToEndOfFile()
        let err = stderr.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(
            status: process.terminationStatus,
            stdout: String(decoding: out, as: UTF8.self),
            stderr: String(decoding: err, as: UTF8.self))
    }
}
