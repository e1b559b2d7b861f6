import OCIReference
import Testing

@Suite("Rewriting references for a connector's proxy")
struct ConnectorRewriteTests {
    let harbor = try! ConnectorID(parsing: "team-a/harbor")

    func address(_ upstream: String, proxy: String, form: ConnectorProxyAddress.Form = .path) throws -> ConnectorProxyAddress {
        try ConnectorProxyAddress(connector: harbor, upstream: RegistryAddress(parsing: upstream), proxy: proxy, form: form)
    }

    static let pathForm: [(upstream: String, proxy: String, image: String, rewritten: String)] = [
        (
            "https://harbor.example.com", "proxy.example:8080", "harbor.example.com/test/abc:v1",
            "proxy.example:8080/namespaces/team-a/connectors/harbor/test/abc:v1"
        ),
        (
            "https://harbor.example.com:443", "http://proxy.example:8080/",
            "harbor.example.com/test/abc@sha256:"
                + String(repeating: "e", count: 64),
            "proxy.example:8080/namespaces/team-a/connectors/harbor/test/abc@sha256:" + String(repeating: "e", count: 64)
        ),
        (
            "http://127.0.0.1:5000", "localhost:8080", "127.0.0.1:5000/app:1.0@sha256:" + String(repeating: "f", count: 64),
            "localhost:8080/namespaces/team-a/connectors/harbor/app:1.0@sha256:" + String(repeating: "f", count: 64)
        ),
        (
            "https://index.docker.io", "127.0.0.1:8080", "ubuntu:22.04",
            "127.0.0.1:8080/namespaces/team-a/connectors/harbor/library/ubuntu:22.04"
        ),
        (
            "https://registry-1.docker.io", "proxy.example", "bitnami/redis",
            "proxy.example/namespaces/team-a/connectors/harbor/bitnami/redis"
        ),
        (
            "https://HARBOR.example.com", "[::1]:8080", "harbor.EXAMPLE.com/x",
            "[::1]:8080/namespaces/team-a/connectors/harbor/x"
        ),
    ]

    @Test(arguments: pathForm)
    func rewritesInPathForm(_ vector: (upstream: String, proxy: String, image: String, rewritten: String)) throws {
        let address = try address(vector.upstream, proxy: vector.proxy)
        let original = try ImageReference(parsing: vector.image)
        let rewritten = try address.rewrite(original)
        #expect(rewritten.string == vector.rewritten)
        // And back again: the proxy's view of the same image.
        let back = try address.upstreamReference(for: rewritten)
        #expect(back.repository == original.repository)
        #expect(back.tag == original.tag)
        #expect(back.digest == original.digest)
    }

    @Test func rewritesInHostForm() throws {
        let host = ConnectorHostPattern.kubernetesService.host(for: harbor)
        #expect(host == "c-harbor.team-a.svc.cluster.local")
        let address = try address("https://harbor.example.com", proxy: host, form: .host)
        let rewritten = try address.rewrite(ImageReference(parsing: "harbor.example.com/test/abc:v1"))
        #expect(rewritten.string == "c-harbor.team-a.svc.cluster.local/test/abc:v1")
        #expect(try address.upstreamReference(for: rewritten).string == "harbor.example.com/test/abc:v1")
        #expect(address.proxiedRegistryPrefix == "c-harbor.team-a.svc.cluster.local")
    }

    @Test func refusesAnotherRegistry() throws {
        let address = try address("https://harbor.example.com", proxy: "proxy.example:8080")
        for image in ["quay.io/test/abc:v1", "harbor.example.com:8443/test/abc", "ubuntu"] {
            #expect {
                _ = try address.rewrite(ImageReference(parsing: image))
            } throws: { error in
                let error = error as! ReferenceError
                return error.code == .registryMismatch && error.reason.contains("team-a/harbor")
            }
        }
        #expect(throws: ReferenceError.self) {
            try address.upstreamReference(for: ImageReference(parsing: "proxy.example:8080/namespaces/other/connectors/harbor/a"))
        }
    }

    @Test func refusesAProxyHostThatReadsAsADockerHubNamespace() {
        #expect {
            _ = try address("https://harbor.example.com", proxy: "c-harbor-connector")
        } throws: { error in
            (error as? ReferenceError)?.code == .invalidAddress
        }
    }

    @Test func refusesARewriteThatWouldPassTheLengthLimit() throws {
        let address = try address("https://harbor.example.com", proxy: "proxy.example:8080")
        let repository = String(repeating: "r", count: 240)
        #expect {
            _ = try address.rewrite(ImageReference(parsing: "harbor.example.com/\(repository)"))
        } throws: { error in
            (error as? ReferenceError)?.code == .nameTooLong
        }
    }

    @Test func mirrorPrefix() throws {
        let address = try address("https://harbor.example.com", proxy: "proxy.example:8080")
        #expect(address.proxiedRegistryPrefix == "proxy.example:8080/namespaces/team-a/connectors/harbor")
    }
}

@Suite("Connector identifiers, addresses and host patterns")
struct ConnectorAddressingTests {
    @Test(arguments: [
        ("team-a/harbor", "team-a", "harbor"),
        ("harbor", "default", "harbor"),
        ("ns/my.registry-1", "ns", "my.registry-1"),
    ])
    func parsesConnectorIDs(_ text: String, _ namespace: String, _ name: String) throws {
        let id = try ConnectorID(parsing: text)
        #expect(id.namespace == namespace && id.name == name)
    }

    @Test(arguments: [
        "", "/", "a/", "/b", "a/b/c", "A/b", "a/B", "a_b/c", "-a/b", "a/b-", "a/.b", "a/b..c",
        String(repeating: "n", count: 64) + "/b",
    ])
    func rejectsConnectorIDs(_ text: String) {
        #expect(throws: ReferenceError.self) { try ConnectorID(parsing: text) }
    }

    @Test(arguments: [
        ("https://harbor.example.com", "harbor.example.com", 443),
        ("http://127.0.0.1:5000", "127.0.0.1", 5000),
        ("http://registry.local:80", "registry.local", 80),
        ("HTTPS://[::1]:8443", "::1", 8443),
        ("https://docker.io", "registry-1.docker.io", 443),
        ("https://index.docker.io", "registry-1.docker.io", 443),
    ])
    func connectsToTheAPIEndpoint(_ text: String, _ host: String, _ port: Int) throws {
        let address = try RegistryAddress(parsing: text)
        #expect(address.connectHost == host)
        #expect(address.connectPort == port)
    }

    @Test(arguments: [
        ("https://harbor.example.com", "https", "harbor.example.com", "harbor.example.com", "https://harbor.example.com"),
        ("harbor.example.com/", "https", "harbor.example.com", "harbor.example.com", "https://harbor.example.com"),
        ("http://127.0.0.1:5000", "http", "127.0.0.1:5000", "127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("http://registry.local:80", "http", "registry.local", "registry.local", "http://registry.local"),
        ("HTTPS://[::1]:8443", "https", "[::1]:8443", "[::1]:8443", "https://[::1]:8443"),
        ("https://index.docker.io", "https", "index.docker.io", "docker.io", "https://registry-1.docker.io"),
        ("https://registry-1.docker.io", "https", "registry-1.docker.io", "docker.io", "https://registry-1.docker.io"),
    ])
    func parsesRegistryAddresses(_ text: String, _ scheme: String, _ authority: String, _ name: String, _ base: String) throws {
        let address = try RegistryAddress(parsing: text)
        #expect(address.scheme.rawValue == scheme)
        #expect(address.authority == authority)
        #expect(address.registryName == name)
        #expect(address.baseURL == base)
    }

    @Test(arguments: [
        "", "ftp://host", "https://", "https://host/path", "https://user:pw@host", "https://host:0",
        "https://host:99999", "https://host:x", "https://ho_st", "https://[::1",
    ])
    func rejectsRegistryAddresses(_ text: String) {
        #expect {
            _ = try RegistryAddress(parsing: text)
        } throws: { error in
            (error as? ReferenceError)?.code == .invalidAddress
        }
    }

    @Test(arguments: [
        ("c-{name}.{namespace}.svc.cluster.local", "c-harbor.team-a.svc.cluster.local", "team-a/harbor"),
        ("c-{name}.{namespace}.svc.cluster.local", "C-Harbor.Team-A.svc.cluster.local:80", "team-a/harbor"),
        ("c-{name}.{namespace}.svc.cluster.local", "c-my.registry.ns.svc.cluster.local", "ns/my.registry"),
        ("{namespace}--{name}.registry.example", "team-a--harbor.registry.example", "team-a/harbor"),
        ("{name}.{namespace}.proxy.local", "harbor.default.proxy.local.", "default/harbor"),
    ])
    func matchesHosts(_ pattern: String, _ host: String, _ connector: String) throws {
        let pattern = try ConnectorHostPattern(pattern)
        let expected = try ConnectorID(parsing: connector)
        #expect(pattern.connector(forHost: host) == expected)
        #expect(pattern.connector(forHost: pattern.host(for: expected)) == expected)
    }

    @Test(arguments: [
        "c-harbor.team-a.svc.cluster.local.evil", "harbor.team-a.svc.cluster.local", "c-.ns.svc.cluster.local",
        "c-harbor.svc.cluster.local", "c-Har_bor.ns.svc.cluster.local",
    ])
    func ignoresOtherHosts(_ host: String) {
        #expect(ConnectorHostPattern.kubernetesService.connector(forHost: host) == nil)
    }

    @Test(arguments: ["c-{name}.svc", "{name}{namespace}.x", "{name}.{name}.{namespace}", "static.example"])
    func rejectsPatterns(_ pattern: String) {
        #expect(throws: ReferenceError.self) { try ConnectorHostPattern(pattern) }
    }
}
