import ArgumentParser
import Dispatch
import Foundation
import OCIClientConfig
import OCIConnectors
import OCIReference

/// `oci-connector-config render`: every file a workload mounts, in one step.
struct RenderCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "render",
        abstract:
            "Write the client configuration files a workload mounts, with a proxy token minted now or the workload's service account token.",
        discussion: """
            Selections: registry-config (config.json), buildkitd (buildkitd.toml), dockerd (daemon.json), \
            containers (registries.conf), containerd (certs.d/PROXY/hosts.toml), mirror (upstream names served \
            through the proxy: registries.conf, certs.d/UPSTREAM/hosts.toml, buildkitd.toml mirrors), pull-secret \
            (pull-secret.yaml). .env, context.token, connector.status.proxyAddress and flags are always written. \
            '!NAME' drops a selection or a file.
            """)

    @Option(name: .customLong("connectors"), help: "Connector YAML: a file or a directory. Repeatable.")
    var connectorPaths: [String]

    @Option(help: "The connector(s), as NAMESPACE/NAME[,NAMESPACE/NAME…].")
    var connector: String

    @Option(help: "The proxy's URL, such as http://proxy.example:8080.")
    var proxy: String

    @Option(help: "The signing key written by 'keys generate' (with --identity proxy-token).")
    var signingKey: String?

    @Option(
        help: ArgumentHelp(
            "What the workload proves itself with: proxy-token (minted with --signing-key) or service-account (the Kubernetes token in --token-file; no key near the workload).",
            valueName: "kind"))
    var identity: Identity = .proxyToken

    @Option(
        help: ArgumentHelp(
            "The projected service account token, with --identity service-account (default: \(ServiceAccountTokenFile.defaultPath)).",
            valueName: "file"))
    var tokenFile: String?

    @Option(help: "The directory to write the files into.")
    var output: String

    @Option(help: "What to write, such as registry-config,buildkitd,!context.token (default: everything).")
    var select: String?

    @Option(
        help: ArgumentHelp(
            "The CA (PEM) the https proxy's certificate comes from: clients then check it instead of treating the proxy as insecure.",
            valueName: "file"))
    var caFile: String?

    @Option(
        help: ArgumentHelp(
            "Where the workload mounts the rendered files, for files that name the CA by path (default: --output's absolute path).",
            valueName: "directory"))
    var caMountPath: String?

    @Option(help: "Token lifetime, such as 30m.")
    var ttl: String = "30m"

    @Option(help: "Token actions: pull, push, delete.")
    var actions: String = "pull,push"

    @Flag(
        help:
            "Keep running and render again at 80% of the token's lifetime (a service account token: when kubelet replaces it); stop on SIGTERM or SIGINT."
    )
    var watch = false

    enum Identity: String, ExpressibleByArgument {
        case proxyToken = "proxy-token"
        case serviceAccount = "service-account"
    }

    func validate() throws {
        switch identity {
        case .proxyToken:
            guard signingKey != nil else { throw ValidationError("--signing-key is required with --identity proxy-token") }
            guard tokenFile == nil else { throw ValidationError("--token-file goes with --identity service-account") }
        case .serviceAccount:
            guard signingKey == nil else {
                throw ValidationError(
                    "--signing-key is not needed with --identity service-account: leave the key out of the workload")
            }
        }
    }

    func run() async throws {
        let connectors = try loadConnectors()
        let selection: Selection
        do {
            selection = try select.map(Selection.init(parsing:)) ?? .all
        } catch {
            throw ToolFailure("\(error.reason)")
        }
        let firstExpiry = try renderOnce(connectors, selection)
        guard watch else { return }

        let renewal: Task<Void, any Error>
        if identity == .serviceAccount {
            // kubelet replaces the token itself (at 80% of its life, by swapping the volume's
            // `..data` link): render again whenever the file holds another token.
            let file = ServiceAccountTokenFile(path: tokenFile ?? ServiceAccountTokenFile.defaultPath)
            renewal = Task {
                var rendered = try file.read()
                while !Task.isCancelled {
                    try await Task.sleep(for: .seconds(1))
                    guard let now = try? file.read(), now != rendered else { continue }
                    _ = try renderOnce(connectors, selection)
                    rendered = now
                }
            }
        } else {
            // Re-render at 80% of what is left of the token's life, until told to stop. The
            // token's times are whole seconds, so its life starts up to a second before it was
            // rendered.
            renewal = Task {
                var expiresAt = firstExpiry
                while !Task.isCancelled {
                    let left = max(0, Double(expiresAt) - Date().timeIntervalSince1970)
                    try await Task.sleep(for: .milliseconds(Int(left * 800)))
                    expiresAt = try renderOnce(connectors, selection)
                }
            }
        }
        let signals = [SIGTERM, SIGINT].map { number -> any DispatchSourceSignal in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { renewal.cancel() }
            source.resume()
            return source
        }
        defer { signals.forEach { $0.cancel() } }
        do {
            try await renewal.value
        } catch is CancellationError {
            return  // Stopped by a signal: the files on disk are complete.
        }
    }

    private func loadConnectors() throws -> [Connector] {
        do {
            let catalog = try ConnectorCatalog.load(from: connectorPaths)
            return try connector.split(separator: ",").map { text in
                try catalog.connector(try ConnectorID(parsing: String(text)))
            }
        } catch let error as ConnectorConfigError {
            throw ToolFailure("\(error)")
        } catch let error as ReferenceError {
            throw ToolFailure("\(error)")
        }
    }

    /// The CA given with `--ca-file`, checked: a PEM certificate, for an https proxy.
    private func trust(for config: ClientConfig) throws -> ProxyTrust? {
        guard let caFile else { return nil }
        guard !config.plainHTTP else {
            throw ToolFailure("--ca-file is for an https proxy; \(proxy) speaks plain HTTP")
        }
        guard let pem = try? String(contentsOfFile: caFile, encoding: .utf8) else {
            throw ToolFailure("cannot read the CA file \(caFile)")
        }
        guard pem.contains("-----BEGIN CERTIFICATE-----"), !pem.contains("PRIVATE KEY") else {
            throw ToolFailure("\(caFile) is not a PEM certificate (and a CA file must hold no private key)")
        }
        let mountPath = caMountPath ?? URL(fileURLWithPath: output).standardizedFileURL.path
        guard mountPath.hasPrefix("/") else { throw ToolFailure("--ca-mount-path must be absolute, not \(mountPath)") }
        return ProxyTrust(certificatePEM: pem, mountPath: mountPath)
    }

    /// Writes the files once; returns when their token expires (seconds since 1970).
    private func renderOnce(_ connectors: [Connector], _ selection: Selection) throws -> Int {
        let token: String
        let expiresAt: Int
        switch identity {
        case .serviceAccount:
            token = try ServiceAccountTokenFile(path: tokenFile ?? ServiceAccountTokenFile.defaultPath).read()
            expiresAt = ServiceAccountTokenFile.expiry(of: token) ?? Int(Date().timeIntervalSince1970) + 3600
        case .proxyToken:
            let (minted, claims) = try mintToken(
                connectors: connectors.map(\.id.description).joined(separator: ","), actions: actions, ttl: ttl,
                repositories: [], signingKey: signingKey ?? "", subject: "render")
            (token, expiresAt) = (minted, claims.expiresAt)
        }
        var config: ClientConfig
        do {
            config = try ClientConfig(connectors: connectors, proxyURL: proxy, token: token)
        } catch {
            throw ToolFailure("\(error)")
        }
        config.trust = try trust(for: config)
        try ConfigWriter.write(ClientConfigRenderer.render(config, selection: selection), to: output)
        return expiresAt
    }
}
