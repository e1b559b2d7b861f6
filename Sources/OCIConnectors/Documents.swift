import Foundation
import OCIReference
import Yams

/// A `Secret` with registry credentials.
struct SecretDocument {
    var key: ObjectKey
    var type: String
    /// `data` (base64-decoded) overlaid with `stringData`, as the API server merges them.
    var values: [String: String]
    var source: SourceDocument

    static let usernamePasswordTypes: Set<String> = [
        "cpaas.io/distribution-registry-token", "kubernetes.io/basic-auth", "Opaque",
    ]
    static let dockerConfigType = "kubernetes.io/dockerconfigjson"

    init(_ document: SourceDocument) throws(ConnectorConfigError) {
        source = document
        key = ObjectKey(namespace: try document.namespace(), name: try document.requiredString("metadata.name"))
        type = document.string("type") ?? "Opaque"
        guard Self.usernamePasswordTypes.contains(type) || type == Self.dockerConfigType else {
            throw document.error(
                field: "type",
                "secret type \(type) is not supported; use cpaas.io/distribution-registry-token, kubernetes.io/basic-auth or kubernetes.io/dockerconfigjson"
            )
        }
        var values: [String: String] = [:]
        if let data = document.node("data") {
            guard let mapping = data.mapping else { throw document.error(field: "data", "must be a mapping") }
            for (keyNode, valueNode) in mapping {
                guard let name = keyNode.scalar?.string else { continue }
                guard let encoded = valueNode.scalar?.string, let bytes = Base64.decode(encoded),
                    let value = String(validating: bytes, as: UTF8.self)
                else {
                    throw document.error(field: "data.\(name)", "must be base64-encoded UTF-8 text")
                }
                values[name] = value
            }
        }
        if let stringData = document.node("stringData") {
            guard let mapping = stringData.mapping else { throw document.error(field: "stringData", "must be a mapping") }
            for (keyNode, valueNode) in mapping {
                guard let name = keyNode.scalar?.string else { continue }
                guard let value = valueNode.scalar?.string else {
                    throw document.error(field: "stringData.\(name)", "must be a string")
                }
                values[name] = value
            }
        }
        self.values = values
    }

    /// The credentials this secret holds for `registry`.
    func credentials(for address: RegistryAddress) throws(ConnectorConfigError) -> RegistryCredentials {
        if type == Self.dockerConfigType {
            return try dockerConfigCredentials(for: address)
        }
        guard let username = values["username"], !username.isEmpty else {
            throw source.error(field: "stringData.username", "is required (in stringData or data)")
        }
        guard let password = values["password"], !password.isEmpty else {
            throw source.error(field: "stringData.password", "is required (in stringData or data)")
        }
        return RegistryCredentials(username: username, password: password)
    }

    private func dockerConfigCredentials(for address: RegistryAddress) throws(ConnectorConfigError) -> RegistryCredentials {
        let field = "data..dockerconfigjson"
        guard let text = values[".dockerconfigjson"] else { throw source.error(field: field, "is required") }
        guard let root = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
            let auths = root["auths"] as? [String: Any]
        else {
            throw source.error(field: field, "must be a docker config.json with an \"auths\" object")
        }
        let wanted = Set([address.authority, address.registryName, address.endpoint])
        guard let entry = auths.first(where: { wanted.contains(Self.registryKey($0.key)) })?.value as? [String: Any] else {
            throw source.error(field: field, "has no auths entry for \(address.registryName)")
        }
        if let username = entry["username"] as? String, let password = entry["password"] as? String,
            !username.isEmpty, !password.isEmpty
        {
            return RegistryCredentials(username: username, password: password)
        }
        guard let auth = entry["auth"] as? String, let bytes = Base64.decode(auth),
            let pair = String(validating: bytes, as: UTF8.self), let colon = pair.firstIndex(of: ":")
        else {
            throw source.error(field: field, "the auths entry for \(address.registryName) has no usable auth")
        }
        return RegistryCredentials(username: String(pair[..<colon]), password: String(pair[pair.index(after: colon)...]))
    }

    /// `https://index.docker.io/v1/` and `harbor.example.com` both name a registry host.
    static func registryKey(_ key: String) -> String {
        var key = Substring(key)
        if let scheme = key.firstRange(of: "://") { key = key[scheme.upperBound...] }
        if let slash = key.firstIndex(of: "/") { key = key[..<slash] }
        let host = String(key)
        return host == "index.docker.io" ? DockerHub.registryName : host
    }
}

/// Reads a `Connector` document.
enum ConnectorDocument {
    static func read(_ document: SourceDocument, secrets: [ObjectKey: SecretDocument]) throws(ConnectorConfigError) -> Connector {
        let namespace = try document.namespace()
        let name = try document.requiredString("metadata.name")
        let id: ConnectorID
        do {
            id = try ConnectorID(namespace: namespace, name: name)
        } catch {
            throw document.error(field: "metadata", error.reason)
        }
        let addressText = try document.requiredString("spec.address")
        let address: RegistryAddress
        do {
            address = try RegistryAddress(parsing: addressText)
        } catch {
            throw document.error(field: "spec.address", error.reason)
        }

        var parameters: [String: String] = [:]
        if let params = document.node("spec.auth.params") {
            guard let items = params.sequence else {
                throw document.error(field: "spec.auth.params", "must be a list of {name, value}")
            }
            for (offset, item) in items.enumerated() {
                guard let key = item["name"]?.scalar?.string, !key.isEmpty else {
                    throw document.error(field: "spec.auth.params[\(offset)].name", "is required")
                }
                parameters[key] = item["value"]?.scalar?.string ?? ""
            }
        }

        var credentials: RegistryCredentials?
        if let reference = document.node("spec.auth.secretRef") {
            guard let secretName = reference["name"]?.scalar?.string, !secretName.isEmpty else {
                throw document.error(field: "spec.auth.secretRef.name", "is required")
            }
            let secretNamespace = reference["namespace"]?.scalar?.string ?? namespace
            guard let secret = secrets[ObjectKey(namespace: secretNamespace, name: secretName)] else {
                throw document.error(
                    field: "spec.auth.secretRef",
                    "secret \(secretNamespace)/\(secretName) is not defined in the loaded files")
            }
            credentials = try secret.credentials(for: address)
        }

        return Connector(
            id: id, address: address, credentials: credentials, authName: document.string("spec.auth.name"),
            parameters: parameters, trustedCertificatesPEM: try trustedCertificates(document),
            origin: "\(document.file), document \(document.index)")
    }

    /// `spec.tls.caBundle` (PEM text) and `spec.tls.caFile` (a path, relative to the file).
    private static func trustedCertificates(_ document: SourceDocument) throws(ConnectorConfigError) -> String? {
        var pem = document.string("spec.tls.caBundle") ?? ""
        if let path = document.string("spec.tls.caFile") {
            let resolved =
                path.hasPrefix("/")
                ? path : ((document.file as NSString).deletingLastPathComponent as NSString).appendingPathComponent(path)
            guard let text = try? String(contentsOfFile: resolved, encoding: .utf8) else {
                throw document.error(field: "spec.tls.caFile", "cannot read \(resolved)")
            }
            pem += (pem.isEmpty ? "" : "\n") + text
        }
        guard !pem.isEmpty else { return nil }
        guard pem.contains("-----BEGIN CERTIFICATE-----") else {
            throw document.error(field: "spec.tls", "must hold PEM certificates")
        }
        return pem
    }
}
