import Foundation
import OCITestSupport
import Testing

/// `Examples/kubernetes` is what platform teams apply: it must be valid Kubernetes, and its
/// ports, paths and flags must be the ones the built executables have.
@Suite("Kubernetes examples")
struct KubernetesExamplesTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let examples = root.appendingPathComponent("Examples/kubernetes")
    static let script = root.appendingPathComponent("Tests/Scripts/check_kubernetes_examples.py")

    static func check(_ directory: URL) throws -> (documents: Int, problems: [String]) {
        let output = try runCommand("/usr/bin/env", ["python3", script.path, directory.path, Tool.binDirectory.path])
        let json = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any] ?? [:]
        return (json["documents"] as? Int ?? 0, json["problems"] as? [String] ?? ["no answer: \(output)"])
    }

    @Test func theExamplesAreValidAndMatchTheExecutables() throws {
        let (documents, problems) = try Self.check(Self.examples)
        #expect(documents >= 9, "\(documents) documents")
        #expect(problems.isEmpty, "\(problems)")
    }

    /// The check itself: a flag the proxy does not have, a probe on the data port, an unknown
    /// field and a key outside any mount are each found.
    @Test func theCheckFindsWhatIsWrong() throws {
        let copy = try Loopback.temporaryDirectory("kubernetes-examples")
        for name in try FileManager.default.contentsOfDirectory(atPath: Self.examples.path) {
            try FileManager.default.copyItem(
                at: Self.examples.appendingPathComponent(name), to: copy.appendingPathComponent(name))
        }
        let deployment = copy.appendingPathComponent("deployment.yaml")
        var text = try String(contentsOf: deployment, encoding: .utf8)
        text = text.replacingOccurrences(of: "--shutdown-grace=25", with: "--drain-seconds=25")
        text = text.replacingOccurrences(
            of: "httpGet: {path: /readyz, port: admin}", with: "httpGet: {path: /readyz, port: https}")
        text = text.replacingOccurrences(of: "--tls-key=/etc/oci-connector/tls/tls.key", with: "--tls-key=/tls.key")
        text = text.replacingOccurrences(of: "replicas: 2", with: "replicas: 2\n  replica: 3")
        try text.write(to: deployment, atomically: true, encoding: .utf8)
        let problems = try Self.check(copy).problems.joined(separator: "\n")
        #expect(problems.contains("oci-connector-proxy has no --drain-seconds"), "\(problems)")
        #expect(problems.contains("readinessProbe must GET /readyz on the admin port"), "\(problems)")
        #expect(problems.contains("--tls-key=/tls.key is not under a mounted volume"), "\(problems)")
        #expect(problems.contains("kubernetes-validate"), "\(problems)")
    }
}
