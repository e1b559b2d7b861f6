import ArgumentParser
import Foundation
import OCIReference

/// `oci-connector-config credential-helper`, also run as `docker-credential-oci-connector`: a
/// docker credential helper for clients that honour `credHelpers` (docker, buildah, podman,
/// skopeo, crane). `get` answers the service account token in the token file, read on every
/// call so that kubelet's rotations are picked up; there is nothing to store or erase.
struct CredentialHelperCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "credential-helper",
        abstract:
            "A docker credential helper answering the workload's service account token (as docker-credential-oci-connector).",
        discussion: """
            Link or copy the executable as docker-credential-oci-connector on the PATH and name it in config.json: \
            {"credHelpers": {"PROXY-HOST:PORT": "oci-connector"}}. The token file is \
            $OCI_CONNECTOR_TOKEN_FILE, or \(ServiceAccountTokenFile.defaultPath).
            """)

    @Argument(help: "get, store, erase, list or version, as the credential helper protocol has it.")
    var action: String

    /// The name credentials are given under; the proxy accepts any.
    static let username = "oci-connector"

    func run() throws {
        let input = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
        switch action {
        case "get":
            let server = input.trimmingCharacters(in: .whitespacesAndNewlines)
            let path = ProcessInfo.processInfo.environment["OCI_CONNECTOR_TOKEN_FILE"] ?? ServiceAccountTokenFile.defaultPath
            let token = try ServiceAccountTokenFile(path: path).read()
            let answer: [String: String] = ["ServerURL": server, "Username": Self.username, "Secret": token]
            let data = try JSONSerialization.data(withJSONObject: answer, options: .sortedKeys)
            FileHandle.standardOutput.write(data + Data("\n".utf8))
        case "store", "erase":
            return  // The token comes from the cluster: nothing is kept here.
        case "list":
            FileHandle.standardOutput.write(Data("{}\n".utf8))
        case "version":
            FileHandle.standardOutput.write(Data("oci-connector credential helper\n".utf8))
        default:
            throw ToolFailure("unknown credential helper action \(action): use get, store, erase, list or version")
        }
    }
}

/// `oci-connector-config credential-provider`: a kubelet image credential provider plugin. It
/// reads a `CredentialProviderRequest` (`credentialprovider.kubelet.k8s.io/v1`) on stdin and
/// answers the pod's service account token (which kubelet passes to plugins configured with
/// `tokenAttributes`, KEP-4412) or the token file's, for the image's registry and the proxy, so
/// pods pull through the proxy (in mirror mode, by their original names) without a pull Secret.
struct CredentialProviderCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "credential-provider",
        abstract: "A kubelet image credential provider answering the pod's service account token for the proxy.")

    @Option(help: "The proxy's address, HOST[:PORT], as the node's containerd reaches it (repeatable).")
    var proxy: [String] = []

    @Option(
        help: ArgumentHelp(
            "The token to answer when kubelet passes none (default: \(ServiceAccountTokenFile.defaultPath)).",
            valueName: "file"))
    var tokenFile: String?

    static let apiVersion = "credentialprovider.kubelet.k8s.io/v1"

    struct Request: Decodable {
        let apiVersion: String?
        let kind: String?
        let image: String
        let serviceAccountToken: String?
    }

    func run() throws {
        let input = FileHandle.standardInput.readDataToEndOfFile()
        guard let request = try? JSONDecoder().decode(Request.self, from: input) else {
            throw ToolFailure("stdin is not a CredentialProviderRequest (JSON with an image)")
        }
        guard request.apiVersion == nil || request.apiVersion == Self.apiVersion else {
            throw ToolFailure("apiVersion \(request.apiVersion ?? "") is not supported; use \(Self.apiVersion)")
        }
        let token: String
        if let given = request.serviceAccountToken, !given.isEmpty {
            token = given
        } else {
            token = try ServiceAccountTokenFile(path: tokenFile ?? ServiceAccountTokenFile.defaultPath).read()
        }
        let registry: String
        do {
            registry = try ImageReference(parsing: request.image).registry
        } catch {
            throw ToolFailure("image \(request.image) is not a valid reference: \(error.reason)")
        }
        // Cached by kubelet for less than the token has left, so a cached answer never outlives it.
        let left = ServiceAccountTokenFile.expiry(of: token).map { $0 - Int(Date().timeIntervalSince1970) } ?? 600
        let cache = max(0, min(left - 60, left * 8 / 10))
        var auth: [String: [String: String]] = [:]
        for host in [registry] + proxy {
            auth[host] = ["username": CredentialHelperCommand.username, "password": token]
        }
        let response: [String: Any] = [
            "apiVersion": Self.apiVersion, "kind": "CredentialProviderResponse", "cacheKeyType": "Registry",
            "cacheDuration": "\(cache)s", "auth": auth,
        ]
        let data = try JSONSerialization.data(withJSONObject: response, options: .sortedKeys)
        FileHandle.standardOutput.write(data + Data("\n".utf8))
    }
}
