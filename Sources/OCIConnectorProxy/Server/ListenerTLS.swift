import Foundation
public import Logging
public import NIOSSL
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The certificate and key a TLS listener serves, re-read when their files change.
///
/// A new connection takes the current context; at most once a second it first looks at the
/// files (following symbolic links, so a Kubernetes Secret mount whose `..data` link is swapped
/// counts as a change). A pair that does not load (half written, a key that does not match)
/// keeps the last good one serving, and is logged with the reason; the next change is tried
/// again. Connections open keep the certificate they started with.
public final class ListenerTLS: Sendable {
    /// The PEM file with the certificate chain, the server's first.
    public let certificateFile: String
    /// The PEM file with the private key.
    public let keyFile: String
    private let logger: Logger
    private let state: Mutex<State>

    private struct State {
        var context: NIOSSLContext
        var files: [FileVersion?]
        var checked: ContinuousClock.Instant
    }

    /// What tells one version of a file from the next.
    private struct FileVersion: Equatable {
        let device: UInt64
        let inode: UInt64
        let size: Int64
        let modified: Int
        let modifiedNanoseconds: Int
    }

    /// Loads the pair; throws a message naming the file that failed.
    public init(certificateFile: String, keyFile: String, logger: Logger) throws {
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        self.logger = logger
        let files = [Self.version(of: certificateFile), Self.version(of: keyFile)]
        let context = try Self.load(certificateFile: certificateFile, keyFile: keyFile)
        state = Mutex(State(context: context, files: files, checked: .now))
    }

    /// The context for a new connection: the files' current pair, or the last one that loaded.
    public func context() -> NIOSSLContext {
        let now = ContinuousClock.now
        let due = state.withLock { state -> [FileVersion?]? in
            guard now - state.checked >= .seconds(1) else { return nil }
            state.checked = now
            return state.files
        }
        if let known = due {
            let files = [Self.version(of: certificateFile), Self.version(of: keyFile)]
            if files != known { reload(files) }
        }
        return state.withLock { $0.context }
    }

    /// Reads the files again now, whether or not they changed; `false` when they do not load.
    @discardableResult
    public func reload() -> Bool {
        reload([Self.version(of: certificateFile), Self.version(of: keyFile)])
    }

    @discardableResult
    private func reload(_ files: [FileVersion?]) -> Bool {
        do {
            let context = try Self.load(certificateFile: certificateFile, keyFile: keyFile)
            state.withLock { state in
                state.context = context
                state.files = files
            }
            logger.notice("TLS certificate loaded", metadata: ["certificate": "\(certificateFile)"])
            return true
        } catch {
            // Remembered as seen, so a broken pair is reported once, not at every connection.
            state.withLock { $0.files = files }
            logger.warning(
                "TLS certificate not reloaded; the last good one keeps serving",
                metadata: ["certificate": "\(certificateFile)", "reason": "\(error)"])
            return false
        }
    }

    private static func load(certificateFile: String, keyFile: String) throws -> NIOSSLContext {
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certificateFile)
        } catch {
            throw ListenerTLSError("cannot read a PEM certificate from \(certificateFile): \(error)")
        }
        guard !chain.isEmpty else { throw ListenerTLSError("\(certificateFile) holds no certificate") }
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(file: keyFile, format: .pem)
        } catch {
            throw ListenerTLSError("cannot read a PEM private key from \(keyFile): \(error)")
        }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.applicationProtocols = ["http/1.1"]
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw ListenerTLSError("the key in \(keyFile) does not fit the certificate in \(certificateFile): \(error)")
        }
    }

    private static func version(of path: String) -> FileVersion? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        #if canImport(Darwin)
        let (seconds, nanoseconds) = (info.st_mtimespec.tv_sec, info.st_mtimespec.tv_nsec)
        #else
        let (seconds, nanoseconds) = (info.st_mtim.tv_sec, info.st_mtim.tv_nsec)
        #endif
        return FileVersion(
            device: UInt64(info.st_dev), inode: UInt64(info.st_ino), size: Int64(info.st_size), modified: Int(seconds),
            modifiedNanoseconds: Int(nanoseconds))
    }
}

/// A certificate or key that cannot serve.
public struct ListenerTLSError: Error, CustomStringConvertible {
    /// What is wrong, naming the file.
    public let description: String

    init(_ description: String) {
        self.description = description
    }
}
