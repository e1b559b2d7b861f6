import Foundation

/// What the secret search after the end-to-end suite reads (`Tests/Scripts/search_secrets.py`):
/// with `OCI_CONNECTOR_TEST_EVIDENCE=DIR`, every credential and token the tests make is written
/// to `DIR/secrets`, one per line, every answer `Curl` receives to `DIR/responses.txt`, what
/// every registry client run through ``runCommand(_:_:input:)`` printed with `--debug` to
/// `DIR/clients.txt`, and the log of every proxy they ran is copied to `DIR` when the test
/// process exits. Without it, nothing is recorded.
public enum SecretEvidence {
    static let directory = ProcessInfo.processInfo.environment["OCI_CONNECTOR_TEST_EVIDENCE"].map {
        URL(fileURLWithPath: $0)
    }
    private static let lock = NSLock()

    /// Whether evidence is being recorded.
    static var isEnabled: Bool { directory != nil }

    /// The registry clients whose output is kept (run with `--debug`).
    static let clients: Set<String> = ["skopeo", "podman", "buildah"]

    /// Keeps what a registry client printed, less its echo of its own command line (podman
    /// prints it with the credentials it was given; the proxy did not show them).
    static func keepClientOutput(_ output: Data, commandLine: String) {
        var text = String(decoding: output, as: UTF8.self)
        if !commandLine.isEmpty { text = text.replacingOccurrences(of: commandLine, with: "<its command line>") }
        append(Data((text + "\n").utf8), to: "clients.txt")
    }

    /// Records a secret the proxy must never show (a password, an upstream token, a client's token).
    public static func record(_ secret: String) {
        guard !secret.isEmpty, !secret.contains("\n") else { return }
        append(Data((secret + "\n").utf8), to: "secrets")
    }

    /// Keeps an answer a test received (its head, and up to 64 KiB of its body) for the search.
    static func keepResponse(head: String, body: Data) {
        append(Data((head + "\n").utf8) + body.prefix(64 * 1024) + Data("\n\n".utf8), to: "responses.txt")
    }

    /// Appends `data` to the evidence file `name`, under one lock for the whole test process.
    private static func append(_ data: Data, to name: String) {
        guard let directory else { return }
        lock.lock()
        defer { lock.unlock() }
        let file = directory.appendingPathComponent(name)
        if !FileManager.default.fileExists(atPath: file.path) {
            _ = FileManager.default.createFile(atPath: file.path, contents: nil)
        }
        guard let handle = try? FileHandle(forWritingTo: file) else { return }
        defer { try? handle.close() }
        _ = try? handle.seekToEnd()
        try? handle.write(contentsOf: data)
    }

    /// Copies the proxy log in `directory`, if any, to the evidence (as the test process exits).
    static func keepLog(from directory: String) {
        guard let evidence = Self.directory else { return }
        let log = URL(fileURLWithPath: directory).appendingPathComponent("proxy.log")
        guard FileManager.default.fileExists(atPath: log.path) else { return }
        let name = URL(fileURLWithPath: directory).lastPathComponent + ".log"
        try? FileManager.default.copyItem(at: log, to: evidence.appendingPathComponent(name))
    }
}
