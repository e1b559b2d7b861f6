import Foundation
import Testing

/// Runs the built `oci-connector-config` the way a user would, and checks what it prints.
@Suite("oci-connector-config reference")
struct ReferenceCommandTests {
    @Test func parseJSONHasEveryKeyWithNullsForAbsentParts() throws {
        let result = try Tool.run("oci-connector-config", "reference", "parse", "ubuntu", "--json")
        #expect(result.status == 0)
        let object = try #require(JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        #expect(Set(object.keys) == ["registry", "repository", "tag", "digest", "normalized", "familiar"])
        #expect(object["registry"] as? String == "docker.io")
        #expect(object["repository"] as? String == "library/ubuntu")
        #expect(object["tag"] is NSNull)
        #expect(object["digest"] is NSNull)
        #expect(object["normalized"] as? String == "docker.io/library/ubuntu")
        #expect(object["familiar"] as? String == "ubuntu")
    }

    @Test func parseJSONWithTagAndDigest() throws {
        let digest = "sha256:" + String(repeating: "c", count: 64)
        let result = try Tool.run("oci-connector-config", "reference", "parse", "localhost:5000/a/b:v1@\(digest)", "--json")
        #expect(result.status == 0)
        let object = try #require(JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        #expect(object["tag"] as? String == "v1")
        #expect(object["digest"] as? String == digest)
        #expect(object["registry"] as? String == "localhost:5000")
    }

    @Test func invalidReferenceFailsWithOneLineOnStderr() throws {
        let result = try Tool.run("oci-connector-config", "reference", "parse", "foo/Bar", "--json")
        #expect(result.status != 0)
        #expect(result.stdout.isEmpty)
        let lines = result.stderr.split(separator: "\n")
        #expect(lines.count == 1)
        #expect(result.stderr.contains("lowercase"))
    }

    @Test func readableSummary() throws {
        let result = try Tool.run("oci-connector-config", "reference", "parse", "busybox:1.36")
        #expect(result.status == 0)
        #expect(result.stdout.contains("docker.io/library/busybox:1.36"))
    }

    @Test func rewritePathAndHostForm() throws {
        let path = try Tool.run(
            "oci-connector-config", "reference", "rewrite", "harbor.example.com/test/abc:v1",
            "--connector", "team-a/harbor", "--upstream", "https://harbor.example.com", "--proxy", "proxy.example:8080")
        #expect(path.status == 0)
        #expect(path.stdout == "proxy.example:8080/namespaces/team-a/connectors/harbor/test/abc:v1\n")

        let host = try Tool.run(
            "oci-connector-config", "reference", "rewrite", "harbor.example.com/test/abc:v1",
            "--connector", "team-a/harbor", "--upstream", "https://harbor.example.com", "--host-form")
        #expect(host.status == 0)
        #expect(host.stdout == "c-harbor.team-a.svc.cluster.local/test/abc:v1\n")
    }

    @Test func rewriteRefusesAnotherRegistry() throws {
        let result = try Tool.run(
            "oci-connector-config", "reference", "rewrite", "quay.io/test/abc:v1",
            "--connector", "team-a/harbor", "--upstream", "https://harbor.example.com", "--proxy", "proxy.example:8080")
        #expect(result.status != 0)
        #expect(result.stderr.contains("harbor.example.com"))
        #expect(result.stderr.split(separator: "\n").count == 1)
    }
}
