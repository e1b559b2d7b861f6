import Foundation
import Testing

@testable import OCIClientConfig

@Suite("Exact TOML and JSON escaping")
struct EscapingTests {
    static let awkward = [
        "plain", "quote \" inside", "back\\slash", "new\nline\ttab\rreturn", "bell\u{07}nul\u{01}del\u{7f}",
        "ünïcödé ✓ 日本", "'single'", "]] [[registry]] x = 1",
    ]

    @Test func jsonRoundTrips() throws {
        for value in Self.awkward {
            let document = "[\(JSONText.string(value))]"
            let parsed = try JSONSerialization.jsonObject(with: Data(document.utf8)) as? [String]
            #expect(parsed == [value])
        }
    }

    @Test func tomlRoundTrips() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("toml-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("values.toml")
        let expected = directory.appendingPathComponent("expected.json")
        try Self.awkward.enumerated().map { "k\($0.offset) = \(TOMLText.string($0.element))" }.joined(separator: "\n")
            .write(to: file, atomically: true, encoding: .utf8)
        try JSONSerialization.data(withJSONObject: Self.awkward).write(to: expected)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [
            "python3", "-c",
            """
            import json, sys, tomllib
            values = tomllib.load(open(sys.argv[1], 'rb'))
            expected = json.load(open(sys.argv[2]))
            sys.exit(0 if [values[f"k{i}"] for i in range(len(expected))] == expected else 1)
            """, file.path, expected.path,
        ]
        try process.run()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
    }
}
