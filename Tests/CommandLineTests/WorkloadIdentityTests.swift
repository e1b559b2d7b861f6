import Foundation
import OCITestSupport
import Testing

/// Workloads that prove who they are with their Kubernetes service account token, and get what
/// the `ConnectorBinding`s naming them grant: no proxy token, no minting key near them.
@Suite("Service account tokens at the proxy", .serialized)
struct WorkloadIdentityTests {
    /// `builder` may pull, push and delete `sa/*` and `oras/*` through `team-a/up`; `reader` of
    /// team-b may pull there; nobody is bound to `team-a/other` or `team-b/up`.
    static let bindings = """
        ---
        apiVersion: oci-connector.dev/v1alpha1
        kind: ConnectorBinding
        metadata: {name: ci-push, namespace: team-a}
        spec:
          connectors: [up]
          subjects: [{kind: ServiceAccount, name: builder}]
          actions: [pull, push, delete]
          repositories: ["sa/*", "oras/*"]
        ---
        apiVersion: oci-connector.dev/v1alpha1
        kind: ConnectorBinding
        metadata: {name: team-b-reads, namespace: team-a}
        spec:
          connectors: [up]
          subjects: [{kind: ServiceAccount, name: reader, namespace: team-b}]
          actions: [pull]
        """

    static func start(tokenEndpoint: Bool = false) async throws -> (
        ProxyProcess, TestRegistry, TokenIssuer, KubernetesTokenIssuer
    ) {
        let (registry, issuer) = try await TokenAuthRegistry.start()
        let cluster = try await KubernetesTokenIssuer.start()
        var arguments = ["--service-account-issuer", cluster.url]
        if tokenEndpoint {
            // The key replicas would share through a Secret.
            let keys = try Loopback.temporaryDirectory("endpoint-keys")
            try runCommand(
                Tool.binDirectory.appendingPathComponent("oci-connector-config").path, ["keys", "generate", "--out", keys.path])
            arguments += ["--token-signing-key", keys.appendingPathComponent("signing-key.jwk").path]
        }
        let yaml =
            ConnectorYAML.connector(name: "up", address: registry.url, username: "robot$ci", password: "s3cret-robot")
            + "---\n"
            + ConnectorYAML.connector(name: "other", address: registry.url, username: "robot$ci", password: "s3cret-robot")
            + bindings
        let proxy = try await ProxyProcess.start(
            binDirectory: Tool.binDirectory, connectorsYAML: yaml, extraArguments: arguments)
        return (proxy, registry, issuer, cluster)
    }

    @Test func skopeoPushesAndPullsWithNothingButAServiceAccountToken() async throws {
        let (proxy, registry, issuer, cluster) = try await Self.start()
        defer { proxy.stop(); registry.stop(); issuer.stop(); cluster.stop() }
        _ = try ProxyEndToEndTests.seed(registry, .token, issuer, repository: "sa/src", layerSize: 300_000)
        let token = cluster.token(namespace: "team-a", serviceAccount: "builder")
        let prefix = "\(proxy.host)/namespaces/team-a/connectors/up"
        try ProxyEndToEndTests.skopeo([
            "copy", "--src-creds", "builder:\(token)", "--dest-creds", "builder:\(token)", "--src-tls-verify=false",
            "--dest-tls-verify=false", "docker://\(prefix)/sa/src:v1", "docker://\(prefix)/sa/dst:v2",
        ])
        let inspected = try ProxyEndToEndTests.skopeo([
            "inspect", "--tls-verify=false", "--creds", "x:\(token)", "docker://\(prefix)/sa/dst:v2",
        ])
        #expect(inspected.contains("\"Name\": \"\(prefix)/sa/dst\""))
        // Every service account of another namespace bound to pull reads, as a Bearer token too.
        let reader = cluster.token(namespace: "team-b", serviceAccount: "reader", alg: "ES256")
        let read = try Curl.request(
            "GET", "http://\(proxy.host)/v2/namespaces/team-a/connectors/up/sa/dst/manifests/v2",
            headers: ["Authorization": "Bearer \(reader)", "Accept": "application/vnd.oci.image.manifest.v1+json"])
        #expect(read.status == 200, "\(read.text)")

        // A pull of many requests cost one look at the cluster's keys; each line names the
        // service account and its pod, never the token.
        #expect(cluster.keySetRequests == 1)
        // A request's line is written as its answer ends, which the client may see first: wait for it.
        #expect(try await proxy.logLine(containing: "identity=system:serviceaccount:team-a:builder") != nil)
        #expect(try await proxy.logLine(containing: "pod=build-x7k2") != nil)
        #expect(try await proxy.logLine(containing: "identity=system:serviceaccount:team-b:reader") != nil)
        let log = try String(contentsOf: proxy.logFile, encoding: .utf8)
        for secret in [token, reader, "s3cret-robot"] { #expect(!log.contains(secret)) }
    }

    /// Each refusal is answered by the proxy before anything reaches the registry or its token server.
    @Test func refusalsComeBeforeAnyUpstreamCall() async throws {
        let (proxy, registry, issuer, cluster) = try await Self.start()
        defer { proxy.stop(); registry.stop(); issuer.stop(); cluster.stop() }
        let stranger = try await KubernetesTokenIssuer.start()
        defer { stranger.stop() }
        let base = "http://\(proxy.host)/v2/namespaces/team-a/connectors"
        let manifest = "\(base)/up/sa/app/manifests/v1"
        let now = Date()
        let builder = cluster.token(namespace: "team-a", serviceAccount: "builder")
        let cases: [(String, String, String, String, Int, String)] = [
            // (what, method, url, token, status, message)
            (
                "wrong audience", "GET", manifest,
                cluster.token(namespace: "team-a", serviceAccount: "builder", audiences: ["vault"]),
                401, "audience"
            ),
            (
                "expired", "GET", manifest,
                cluster.token(namespace: "team-a", serviceAccount: "builder", lifetime: 600, issuedAt: now - 3600), 401, "expired"
            ),
            (
                "not yet valid", "GET", manifest,
                cluster.token(namespace: "team-a", serviceAccount: "builder", issuedAt: now + 3600), 401, "not valid yet"
            ),
            (
                "unknown key", "GET", manifest,
                cluster.sign(claims: ["iss": cluster.url], alg: "RS256", header: ["kid": "made-up"]), 401, "not one of"
            ),
            ("alg none", "GET", manifest, cluster.sign(claims: ["iss": cluster.url], alg: "none"), 401, "not accepted"),
            (
                "HS256 keyed with the public key", "GET", manifest, cluster.sign(claims: ["iss": cluster.url], alg: "HS256"), 401,
                "not accepted"
            ),
            (
                "unknown issuer", "GET", manifest, stranger.token(namespace: "team-a", serviceAccount: "builder"), 401,
                "not trusted"
            ),
            (
                "no binding", "GET", manifest, cluster.token(namespace: "team-a", serviceAccount: "nobody"), 403,
                "no ConnectorBinding in namespace team-a grants system:serviceaccount:team-a:nobody"
            ),
            ("another connector", "GET", "\(base)/other/sa/app/manifests/v1", builder, 403, "ConnectorBinding"),
            (
                "another namespace's connector", "GET",
                "http://\(proxy.host)/v2/namespaces/team-b/connectors/up/sa/app/manifests/v1", builder, 403,
                "no ConnectorBinding in namespace team-b"
            ),
            (
                "pull-only pushing", "POST", "\(base)/up/sa/app/blobs/uploads/",
                cluster.token(namespace: "team-b", serviceAccount: "reader"), 403, "push on sa/app"
            ),
            ("outside the repositories", "POST", "\(base)/up/other/app/blobs/uploads/", builder, 403, "push on other/app"),
        ]
        let before = issuer.counts.total
        for (what, method, url, token, status, message) in cases {
            let response = try Curl.request(method, url, token: token)
            #expect(response.status == status, "\(what): \(response.status) \(response.text)")
            #expect(response.text.contains(message), "\(what): \(response.text)")
            #expect(response.text.contains(#""errors":[{"code":"#), "\(what): \(response.text)")
        }
        #expect(issuer.counts.total == before, "a refused request reached the token server")
        let log = try String(contentsOf: proxy.logFile, encoding: .utf8)
        for (_, _, _, token, _, _) in cases { #expect(!log.contains(token)) }
    }

    /// With a signing key the proxy challenges with Bearer and serves the token flow: clients
    /// trade a service account token (or a proxy token) for a short-lived token narrowed to the
    /// scopes they ask and the bindings grant, and renew it by themselves.
    @Test func clientsFetchTokensFromTheProxysTokenEndpoint() async throws {
        let (proxy, registry, issuer, cluster) = try await Self.start(tokenEndpoint: true)
        defer { proxy.stop(); registry.stop(); issuer.stop(); cluster.stop() }
        let origin = "http://\(proxy.host)"
        let prefix = "namespaces/team-a/connectors/up"

        // The challenges name the endpoint and the scope a request needs.
        let login = try Curl.request("GET", "\(origin)/v2/")
        #expect(login.status == 401)
        #expect(login.header("WWW-Authenticate") == #"Bearer realm="\#(origin)/token",service="oci-connector-proxy""#)
        let push = try Curl.request("POST", "\(origin)/v2/\(prefix)/sa/app/blobs/uploads/")
        #expect(
            push.header("WWW-Authenticate")
                == #"Bearer realm="\#(origin)/token",service="oci-connector-proxy",scope="repository:\#(prefix)/sa/app:pull,push""#
        )

        // skopeo follows them with nothing but a service account token; so does oras's Python
        // client, sending it as Basic credentials (its token mode keeps one token for every scope).
        _ = try ProxyEndToEndTests.seed(registry, .token, issuer, repository: "sa/src", layerSize: 200_000)
        let token = cluster.token(namespace: "team-a", serviceAccount: "builder")
        try ProxyEndToEndTests.skopeo([
            "copy", "--src-creds", "builder:\(token)", "--dest-creds", "builder:\(token)", "--src-tls-verify=false",
            "--dest-tls-verify=false", "docker://\(proxy.host)/\(prefix)/sa/src:v1", "docker://\(proxy.host)/\(prefix)/sa/dst:v2",
        ])
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Scripts/oras_roundtrip.py")
        let oras = try runCommand(
            "/usr/bin/env", ["python3", script.path, proxy.host, prefix, try Loopback.temporaryDirectory("oras").path, "basic"],
            input: token)
        #expect(oras.contains("oras round trip ok"), "\(oras)")
        let log = try String(contentsOf: proxy.logFile, encoding: .utf8)
        let issued = log.split(separator: "\n").filter { $0.contains("endpoint=token") && $0.contains("status=200") }
        #expect(!issued.isEmpty, "no token was issued")
        #expect(issued.allSatisfy { $0.contains("identity=system:serviceaccount:team-a:builder") })
        #expect(!log.contains(token))

        // By hand: a token for more than the bindings grant holds only what they grant.
        func issue(_ query: String, credentials: String) throws -> (Int, String?, Int?) {
            let response = try Curl.request("GET", "\(origin)/token?service=oci-connector-proxy&\(query)", token: credentials)
            let json = try? JSONSerialization.jsonObject(with: response.body) as? [String: Any]
            return (response.status, json?["token"] as? String, json?["expires_in"] as? Int)
        }
        let (status, narrowed, _) = try issue(
            "scope=repository:\(prefix)/sa/app:pull,push&scope=repository:\(prefix)/other/app:pull,push", credentials: token)
        #expect(status == 200)
        let bearer = try #require(narrowed)
        let allowed = try Curl.request(
            "POST", "\(origin)/v2/\(prefix)/sa/app/blobs/uploads/", headers: ["Authorization": "Bearer \(bearer)"])
        #expect(allowed.status == 202, "\(allowed.text)")
        let upstreamCalls = issuer.counts.total
        // A scope it lacks is challenged as registries do, for a client to fetch a token for it;
        // the bindings do not grant this one, so the new token still lacks it.
        let outside = try Curl.request(
            "POST", "\(origin)/v2/\(prefix)/other/app/blobs/uploads/", headers: ["Authorization": "Bearer \(bearer)"])
        #expect(outside.status == 401, "\(outside.text)")
        #expect(
            outside.header("WWW-Authenticate")
                == #"Bearer realm="\#(origin)/token",service="oci-connector-proxy",scope="repository:\#(prefix)/other/app:pull,push",error="insufficient_scope""#
        )
        let (_, renewed, _) = try issue("scope=repository:\(prefix)/other/app:pull,push", credentials: token)
        let again = try Curl.request(
            "POST", "\(origin)/v2/\(prefix)/other/app/blobs/uploads/",
            headers: ["Authorization": "Bearer \(try #require(renewed))"])
        #expect(again.status == 401)
        #expect(issuer.counts.total == upstreamCalls, "a refused request reached the token server")

        // The OAuth2 form; a proxy token as the credentials; refusals.
        let form = try Curl.request(
            "POST", "\(origin)/token", headers: ["Content-Type": "application/x-www-form-urlencoded"],
            data: Data(
                "grant_type=password&username=ci&password=\(token)&service=oci-connector-proxy&scope=repository:\(prefix)/sa/app:pull"
                    .utf8))
        #expect(form.status == 200 && form.text.contains(#""access_token":"#), "\(form.text)")
        #expect(try issue("scope=repository:\(prefix)/sa/app:pull", credentials: proxy.token()).0 == 200)
        let refresh = try Curl.request(
            "POST", "\(origin)/token", headers: ["Content-Type": "application/x-www-form-urlencoded"],
            data: Data("grant_type=refresh_token&refresh_token=x".utf8))
        #expect(refresh.status == 400 && refresh.text.contains(#""code":"UNSUPPORTED""#), "\(refresh.text)")
        let stranger = try issue("scope=repository:\(prefix)/sa/app:pull", credentials: "not-a-token")
        #expect(stranger.0 == 401)
        // Never beyond the credentials' own life.
        let short = cluster.token(namespace: "team-a", serviceAccount: "builder", lifetime: 120)
        let (_, _, expiresIn) = try issue("scope=repository:\(prefix)/sa/app:pull", credentials: short)
        #expect((expiresIn ?? .max) <= 120 + 60)
    }

    /// buildah builds an image and pushes it, podman and containerd's `ctr` (which asks with the
    /// OAuth2 form first) pull and push it, all through the token endpoint with nothing but the
    /// service account token.
    @Test func buildahPodmanAndContainerdUseTheTokenEndpoint() async throws {
        let (proxy, registry, issuer, cluster) = try await Self.start(tokenEndpoint: true)
        defer { proxy.stop(); registry.stop(); issuer.stop(); cluster.stop() }
        let token = cluster.token(namespace: "team-a", serviceAccount: "builder")
        let prefix = "\(proxy.host)/namespaces/team-a/connectors/up"
        let storage = try Loopback.temporaryDirectory("containers")
        let common = [
            "--root", storage.appendingPathComponent("root").path, "--runroot", storage.appendingPathComponent("run").path,
            "--storage-driver", "vfs",
        ]
        let creds = ["--tls-verify=false", "--creds", "builder:\(token)"]

        // buildah builds an image from nothing and pushes it.
        let context = storage.appendingPathComponent("hello.txt")
        try "built through the proxy".write(to: context, atomically: true, encoding: .utf8)
        let container = try runCommand("/usr/bin/buildah", common + ["from", "scratch"]).trimmingCharacters(
            in: .whitespacesAndNewlines)
        try runCommand("/usr/bin/buildah", common + ["copy", container, context.path, "/hello.txt"])
        try runCommand("/usr/bin/buildah", common + ["commit", container, "localhost/sa-built:v1"])
        try runCommand(
            "/usr/bin/buildah", common + ["push"] + creds + ["localhost/sa-built:v1", "docker://\(prefix)/sa/buildah:v1"])

        // podman pulls it and pushes it under another name.
        let podmanStorage = try Loopback.temporaryDirectory("podman")
        let podman = [
            "--root", podmanStorage.appendingPathComponent("root").path, "--runroot",
            podmanStorage.appendingPathComponent("run").path, "--storage-driver", "vfs",
        ]
        try runCommand("/usr/bin/podman", podman + ["pull"] + creds + ["\(prefix)/sa/buildah:v1"])
        try runCommand(
            "/usr/bin/podman", podman + ["push"] + creds + ["\(prefix)/sa/buildah:v1", "docker://\(prefix)/sa/podman:v1"])

        // containerd pulls it and pushes it under another name.
        let containerd = try await Containerd.start()
        defer { containerd.stop() }
        try containerd.ctr([
            "images", "pull", "--all-platforms", "--plain-http", "--user", "builder:\(token)", "\(prefix)/sa/podman:v1",
        ])
        try containerd.ctr(["images", "tag", "\(prefix)/sa/podman:v1", "\(prefix)/sa/ctr:v1"])
        try containerd.ctr(["images", "push", "--plain-http", "--user", "builder:\(token)", "\(prefix)/sa/ctr:v1"])

        // Each is in the registry, read back through the proxy.
        for repository in ["buildah", "podman", "ctr"] {
            let inspected = try ProxyEndToEndTests.skopeo([
                "inspect", "--tls-verify=false", "--creds", "x:\(token)", "docker://\(prefix)/sa/\(repository):v1",
            ])
            #expect(inspected.contains("\"Name\": \"\(prefix)/sa/\(repository)\""), "\(repository)")
        }
        let log = try String(contentsOf: proxy.logFile, encoding: .utf8)
        let posts = log.split(separator: "\n").filter {
            $0.contains("endpoint=token") && $0.contains("method=POST") && $0.contains("status=200")
        }
        #expect(!posts.isEmpty, "containerd's OAuth2 form was not answered")
        #expect(!log.contains(token))
    }

    /// Bindings are reloaded with the connectors: a withdrawn binding takes effect on the next
    /// request of a token that was verified and remembered before.
    @Test func aWithdrawnBindingTakesEffectOnReload() async throws {
        let (proxy, registry, issuer, cluster) = try await Self.start()
        defer { proxy.stop(); registry.stop(); issuer.stop(); cluster.stop() }
        let token = cluster.token(namespace: "team-a", serviceAccount: "builder")
        let tags = "http://\(proxy.host)/v2/namespaces/team-a/connectors/up/sa/app/tags/list"
        // Allowed: the request reaches the registry, which knows no such repository.
        let before = try Curl.request("GET", tags, token: token)
        #expect(before.status == 404 && before.text.contains("NAME_UNKNOWN"), "\(before.text)")

        let connectors = proxy.directory.appendingPathComponent("connectors.yaml")
        let yaml = try String(contentsOf: connectors, encoding: .utf8)
        let withdrawn = try #require(
            yaml.range(of: "---\napiVersion: oci-connector.dev/v1alpha1\nkind: ConnectorBinding\nmetadata: {name: ci-push"))
        let next = yaml[withdrawn.upperBound...].range(of: "---\n")
        try (String(yaml[..<withdrawn.lowerBound]) + (next.map { String(yaml[$0.lowerBound...]) } ?? "")).write(
            to: connectors, atomically: true, encoding: .utf8)
        kill(proxy.processIdentifier, SIGHUP)
        _ = try #require(try await proxy.logLine(containing: "configuration reloaded"), "no reload")
        let after = try Curl.request("GET", tags, token: token)
        #expect(after.status == 403 && after.text.contains("no ConnectorBinding"), "\(after.text)")
    }
}
