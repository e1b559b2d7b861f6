import Foundation
import OCITestSupport
import Testing

/// `oci-connector-config check` against the three real registries, as an operator runs it.
@Suite("oci-connector-config check", .serialized)
struct CheckCommandTests {
    static func connectorsFile(_ yaml: String) throws -> String {
        let directory = try Loopback.temporaryDirectory("check")
        let file = directory.appendingPathComponent("connectors.yaml")
        try yaml.write(to: file, atomically: true, encoding: .utf8)
        return file.path
    }

    static func check(_ file: String, _ extra: String...) throws -> Tool.Result {
        try Tool.run(["oci-connector-config", "check", "--connectors", file, "--connector", "team-a/up"] + extra)
    }

    @Test func anonymousRegistry() async throws {
        let registry = try await SharedRegistries.shared.anonymous()
        try Seeder.push(TestImage(seed: 11), to: registry, repository: "cli/app", tag: "v1")
        let file = try Self.connectorsFile(ConnectorYAML.connector(name: "up", address: registry.url, repository: "cli/app"))
        let ready = try Self.check(file)
        #expect(ready.status == 0 && ready.stdout == "ready\n", "\(ready.stderr)")
        let missing = try Self.check(file, "--repository", "cli/missing")
        #expect(missing.status != 0)
        #expect(missing.stderr.contains("repository-not-found") && missing.stderr.contains("cli/missing"))
    }

    @Test func basicRegistry() async throws {
        let registry = try await SharedRegistries.shared.basic()
        try Seeder.push(TestImage(seed: 12), to: registry, repository: "cli/app", tag: "v1", user: SharedRegistries.basicUser)
        let good = try Self.connectorsFile(
            ConnectorYAML.connector(
                name: "up", address: registry.url, username: "alice", password: "alice-secret", repository: "cli/app"))
        let ready = try Self.check(good, "--action", "push")
        #expect(ready.status == 0 && ready.stdout == "ready\n", "\(ready.stderr)")

        let bad = try Self.connectorsFile(
            ConnectorYAML.connector(
                name: "up", address: registry.url, username: "alice", password: "wrong-canary", repository: "cli/app"))
        let refused = try Self.check(bad)
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("bad-credentials"))
        #expect(!refused.stderr.contains("wrong-canary") && !refused.stdout.contains("wrong-canary"))
    }

    @Test func tokenRegistry() async throws {
        let (registry, issuer) = try await SharedRegistries.shared.token()
        try Seeder.push(
            TestImage(seed: 13), to: registry, repository: "cli/app", tag: "v1",
            user: SharedRegistries.robotUser, issuer: issuer)
        let robot = try Self.connectorsFile(
            ConnectorYAML.connector(
                name: "up", address: registry.url, username: "robot$ci", password: "s3cret-robot", repository: "cli/app"))
        let ready = try Self.check(robot)
        #expect(ready.status == 0 && ready.stdout == "ready\n", "\(ready.stderr)")

        let reader = try Self.connectorsFile(
            ConnectorYAML.connector(
                name: "up", address: registry.url, username: "reader", password: "reader-secret", repository: "cli/app"))
        #expect(try Self.check(reader).status == 0)
        let push = try Self.check(reader, "--action", "push")
        #expect(push.status != 0)
        #expect(push.stderr.contains("insufficient-scope") && push.stderr.contains("granted: pull"), "\(push.stderr)")
    }

    @Test func unreachableUpstreamAndUnknownConnector() throws {
        let port = try Loopback.freePort()
        let file = try Self.connectorsFile(
            ConnectorYAML.connector(name: "up", address: "http://127.0.0.1:\(port)", repository: "a/b"))
        let down = try Self.check(file)
        #expect(down.status != 0 && down.stderr.contains("unreachable"))
        let unknown = try Tool.run(["oci-connector-config", "check", "--connectors", file, "--connector", "team-a/nope"])
        #expect(unknown.status != 0 && unknown.stderr.contains("team-a/up"))
    }
}
