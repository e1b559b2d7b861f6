import OCIConnectors
import OCIReference

/// Renders a ``ClientConfig`` into files. Several connectors merge into one set of files, and
/// kinds that write the same file merge into it.
public enum ClientConfigRenderer {
    /// The rendered files, sorted by path.
    public static func render(
        _ config: ClientConfig, selection: Selection = .all, pullSecretName: String = "oci-connector-registry"
    ) -> [RenderedFile] {
        var files: [RenderedFile] = []
        if selection.includes(.registryConfig) { files.append(dockerConfig(config)) }
        if selection.includes(.buildkitd) || selection.includes(.mirror) { files.append(buildkitd(config, selection)) }
        if selection.includes(.dockerd) { files.append(daemonJSON(config)) }
        if selection.includes(.containers) || selection.includes(.mirror) { files.append(registriesConf(config, selection)) }
        if selection.includes(.containerd) { files.append(proxyHostsTOML(config)) }
        if selection.includes(.mirror) { files += mirrorHostsTOML(config) }
        if selection.includes(.pullSecret) { files.append(pullSecret(config, name: pullSecretName)) }
        files += builtIns(config)
        if config.verifiesProxy, let trust = config.trust {
            // Where docker, podman, buildah, skopeo and containerd look for a registry's CA.
            files.append(RenderedFile(path: config.caFile, contents: trust.certificatePEM, isSecret: false))
        }
        return files.filter { !selection.excluded.contains($0.path) }.sorted { $0.path < $1.path }
    }

    // MARK: - Docker and Kubernetes

    /// `config.json`: Basic credentials (any user, the token as password) for the proxy host.
    static func dockerConfig(_ config: ClientConfig) -> RenderedFile {
        RenderedFile(path: "config.json", contents: dockerConfigJSON(config), isSecret: true)
    }

    static func dockerConfigJSON(_ config: ClientConfig) -> String {
        let auth = Base64.encode(Array("\(config.username):\(config.token)".utf8))
        return """
            {
              "auths": {
                \(JSONText.string(config.proxyHost)): {
                  "auth": \(JSONText.string(auth))
                }
              }
            }

            """
    }

    /// `daemon.json`: dockerd may talk plain HTTP (or untrusted TLS) to the proxy; with a CA,
    /// no registry is insecure (dockerd reads the CA from `/etc/docker/certs.d/PROXY/ca.crt`).
    static func daemonJSON(_ config: ClientConfig) -> RenderedFile {
        guard !config.verifiesProxy else {
            return RenderedFile(path: "daemon.json", contents: "{\n  \"insecure-registries\": []\n}\n", isSecret: false)
        }
        return RenderedFile(
            path: "daemon.json",
            contents: """
                {
                  "insecure-registries": [
                    \(JSONText.string(config.proxyHost))
                  ]
                }

                """, isSecret: false)
    }

    /// `pull-secret.yaml`: a `kubernetes.io/dockerconfigjson` Secret for kubelet pulls.
    static func pullSecret(_ config: ClientConfig, name: String) -> RenderedFile {
        let namespace = config.endpoints.first?.connector.namespace ?? ConnectorID.defaultNamespace
        let encoded = Base64.encode(Array(dockerConfigJSON(config).utf8))
        return RenderedFile(
            path: "pull-secret.yaml",
            contents: """
                apiVersion: v1
                kind: Secret
                metadata:
                  name: \(JSONText.string(name))
                  namespace: \(JSONText.string(namespace))
                type: kubernetes.io/dockerconfigjson
                data:
                  .dockerconfigjson: \(encoded)

                """, isSecret: true)
    }

    // MARK: - BuildKit

    /// `buildkitd.toml`: the proxy as a plain-HTTP (or untrusted-TLS) registry, and with
    /// `mirror`, each upstream mirrored through its connector prefix. Never
    /// `insecure-entitlements`: it grants privileges that have nothing to do with registries.
    static func buildkitd(_ config: ClientConfig, _ selection: Selection) -> RenderedFile {
        var text = "# BuildKit: reach the registries through the OCI connector proxy.\n"
        if selection.includes(.mirror) {
            for endpoint in config.endpoints {
                text += "\n[registry.\(TOMLText.string(endpoint.upstream.registryName))]\n"
                text += "  mirrors = \(TOMLText.array([endpoint.address.proxiedRegistryPrefix]))\n"
            }
        }
        text += "\n[registry.\(TOMLText.string(config.proxyHost))]\n"
        if let caPath = config.caPath, config.verifiesProxy {
            text += "  ca = \(TOMLText.array([caPath]))\n"
        } else {
            text += config.plainHTTP ? "  http = true\n" : "  insecure = true\n"
        }
        return RenderedFile(path: "buildkitd.toml", contents: text, isSecret: false)
    }

    // MARK: - containers (podman, buildah, skopeo, CRI-O)

    /// `registries.conf` (v2): the proxy as an insecure registry, and with `mirror`, each upstream
    /// name rewritten to the proxy prefix so images keep their original names.
    static func registriesConf(_ config: ClientConfig, _ selection: Selection) -> RenderedFile {
        var text = "# containers-registries.conf(5), version 2: registries reached through the OCI connector proxy.\n"
        if selection.includes(.containers) {
            text += "\n[[registry]]\nlocation = \(TOMLText.string(config.proxyHost))\ninsecure = \(config.plainHTTP)\n"
        }
        if selection.includes(.mirror) {
            for endpoint in config.endpoints {
                text += "\n[[registry]]\n"
                text += "prefix = \(TOMLText.string(endpoint.upstream.registryName))\n"
                text += "location = \(TOMLText.string(endpoint.address.proxiedRegistryPrefix))\n"
                text += "insecure = \(config.plainHTTP)\n"
            }
        }
        return RenderedFile(path: "registries.conf", contents: text, isSecret: false)
    }

    // MARK: - containerd

    /// `certs.d/PROXY/hosts.toml`: plain HTTP to the proxy.
    static func proxyHostsTOML(_ config: ClientConfig) -> RenderedFile {
        RenderedFile(
            path: "certs.d/\(config.proxyHost)/hosts.toml",
            contents: """
                server = \(TOMLText.string(config.proxyURL))

                [host.\(TOMLText.string(config.proxyURL))]
                  capabilities = ["pull", "resolve", "push"]
                \(tlsLine(config))
                """, isSecret: false)
    }

    /// How containerd checks the proxy's certificate: against the CA, not at all, or (plain
    /// HTTP) not applicable.
    static func tlsLine(_ config: ClientConfig) -> String {
        if config.plainHTTP { return "" }
        if let caPath = config.caPath, config.verifiesProxy { return "  ca = \(TOMLText.string(caPath))\n" }
        return "  skip_verify = true\n"
    }

    /// `certs.d/UPSTREAM/hosts.toml`: the upstream served through its connector prefix
    /// (`override_path`, so containerd uses the path as the API root).
    static func mirrorHostsTOML(_ config: ClientConfig) -> [RenderedFile] {
        config.endpoints.map { endpoint in
            let mirror = "\(config.proxyURL)/v2/\(endpoint.address.repositoryPrefix)"
            return RenderedFile(
                path: "certs.d/\(endpoint.upstream.registryName)/hosts.toml",
                contents: """
                    server = \(TOMLText.string(endpoint.upstream.baseURL))

                    [host.\(TOMLText.string(mirror))]
                      capabilities = ["pull", "resolve", "push"]
                      override_path = true
                    \(tlsLine(config))
                    """, isSecret: false)
        }
    }

    // MARK: - Scripts

    static func builtIns(_ config: ClientConfig) -> [RenderedFile] {
        var env = "# The OCI connector proxy, for scripts: source this file.\n"
        env += "OCI_CONNECTOR_PROXY=\(ShellText.quoted(config.proxyURL))\n"
        env += "OCI_CONNECTOR_PROXY_HOST=\(ShellText.quoted(config.proxyHost))\n"
        env += "OCI_CONNECTOR_TOKEN=\(ShellText.quoted(config.token))\n"
        for endpoint in config.endpoints {
            env +=
                "OCI_CONNECTOR_REGISTRY_\(variableName(endpoint.connector))=\(ShellText.quoted(endpoint.address.proxiedRegistryPrefix))\n"
        }
        let addresses =
            config.endpoints.map { "\(config.proxyURL)/\($0.address.repositoryPrefix)" }.joined(separator: "\n") + "\n"
        let flags =
            config.verifiesProxy
            ? """
            # The proxy at \(config.proxyHost) speaks TLS with a certificate from the CA in \(config.caPath ?? ""):
            buildah --cert-dir \(ShellText.quoted(String((config.caPath ?? "").dropLast("/ca.crt".count))))
            podman --cert-dir \(ShellText.quoted(String((config.caPath ?? "").dropLast("/ca.crt".count))))
            skopeo --cert-dir \(ShellText.quoted(String((config.caPath ?? "").dropLast("/ca.crt".count))))
            ko SSL_CERT_FILE=\(ShellText.quoted(config.caPath ?? ""))
            crane SSL_CERT_FILE=\(ShellText.quoted(config.caPath ?? ""))
            oras --ca-file \(ShellText.quoted(config.caPath ?? ""))
            helm --ca-file \(ShellText.quoted(config.caPath ?? ""))

            """
            : config.plainHTTP
                ? """
                # The proxy at \(config.proxyHost) speaks plain HTTP. Options for tools configured by flags:
                buildah --tls-verify=false
                podman --tls-verify=false
                skopeo --tls-verify=false
                ko --insecure-registry
                crane --insecure
                oras --plain-http
                helm --plain-http

                """
                : """
                # The proxy at \(config.proxyHost) speaks TLS. If its certificate is not trusted:
                buildah --tls-verify=false
                podman --tls-verify=false
                skopeo --tls-verify=false
                ko --insecure-registry
                crane --insecure
                oras --insecure
                helm --insecure-skip-tls-verify

                """
        return [
            RenderedFile(path: ".env", contents: env, isSecret: true),
            RenderedFile(path: "context.token", contents: config.token, isSecret: true),
            RenderedFile(path: "connector.status.proxyAddress", contents: addresses, isSecret: false),
            RenderedFile(path: "flags", contents: flags, isSecret: false),
        ]
    }

    /// `team-a/harbor` → `TEAM_A_HARBOR`.
    static func variableName(_ connector: ConnectorID) -> String {
        String(
            String.UnicodeScalarView(
                connector.description.uppercased().unicodeScalars.map { scalar in
                    (scalar.properties.isAlphabetic && scalar.isASCII) || ("0"..."9").contains(scalar) ? scalar : "_"
                }))
    }
}
