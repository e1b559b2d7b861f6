import CoreMetrics
import Foundation
import Logging
import OCIConnectorProxy
import OCIConnectors
import OCIProxyToken

/// Re-reads the connectors, their Secrets and the token keys when their files change (checked
/// every `interval`, following links, so a ConfigMap or Secret mount's `..data` swap counts) or
/// when the process gets SIGHUP, and hands them to the proxy. Files that do not load keep the
/// last good configuration serving; the reason is logged, and the next change is tried again.
/// Counted as `oci_connector_reloads_total{result}` (`ok`, `error`).
struct ConfigurationReloader: Sendable {
    let connectorPaths: [String]
    /// `nil` when the proxy takes service account tokens only.
    let tokenKeys: String?
    let proxy: ConnectorProxy
    let logger: Logger
    var interval: Duration = .seconds(2)

    /// Runs until cancelled.
    func run() async {
        // `true` for a SIGHUP, `false` for a look at the files.
        let (wakeUps, continuation) = AsyncStream.makeStream(of: Bool.self)
        signal(SIGHUP, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
        source.setEventHandler { continuation.yield(true) }
        source.resume()
        let ticker = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                continuation.yield(false)
            }
        }
        defer {
            source.cancel()
            ticker.cancel()
            continuation.finish()
        }
        // What the files looked like at the last reload; a SIGHUP reloads whatever they are.
        var seen = fingerprint()
        for await hangUp in wakeUps {
            let now = fingerprint()
            guard hangUp || now != seen else { continue }
            seen = now
            await reload(reason: hangUp ? "SIGHUP" : "files changed")
        }
    }

    /// Loads the files and gives them to the proxy; logs and counts the outcome.
    func reload(reason: String) async {
        do {
            let catalog = try ConnectorCatalog.load(from: connectorPaths)
            let verifier = try tokenKeys.map(ProxyTokenVerifier.load(from:)) ?? ProxyTokenVerifier(keys: [])
            let summary = try await proxy.reload(catalog: catalog, verifier: verifier)
            Counter(label: "oci_connector_reloads_total", dimensions: [("result", "ok")]).increment()
            logger.notice(
                "configuration reloaded",
                metadata: [
                    "reason": "\(reason)", "connectors": "\(catalog.connectors.count)",
                    "added": "\(summary.added.map(\.description).joined(separator: ","))",
                    "removed": "\(summary.removed.map(\.description).joined(separator: ","))",
                    "changed": "\(summary.changed.map(\.description).joined(separator: ","))",
                ])
        } catch {
            Counter(label: "oci_connector_reloads_total", dimensions: [("result", "error")]).increment()
            logger.warning(
                "configuration not reloaded; the last good one keeps serving",
                metadata: ["reason": "\(reason)", "error": "\(error)"])
        }
    }

    /// Every file under the paths (directories one level deep, as they are loaded), with what
    /// tells its versions apart.
    func fingerprint() -> [String: String] {
        var files: [String: String] = [:]
        for path in connectorPaths + (tokenKeys.map { [$0] } ?? []) {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
                files[path] = "missing"
                continue
            }
            let names =
                isDirectory.boolValue
                ? ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).filter { !$0.hasPrefix(".") }
                    .map { path + "/" + $0 } : [path]
            for name in names {
                var info = stat()
                guard stat(name, &info) == 0 else {
                    files[name] = "unreadable"
                    continue
                }
                #if canImport(Darwin)
                let modified = info.st_mtimespec
                #else
                let modified = info.st_mtim
                #endif
                files[name] = "\(info.st_dev):\(info.st_ino):\(info.st_size):\(modified.tv_sec).\(modified.tv_nsec)"
            }
        }
        return files
    }
}
