import Foundation

/// HTTP requests with `curl`, a client independent of the code under test.
public enum Curl {
    public struct Response: Sendable {
        public var status: Int
        public var headers: [(String, String)]
        public var body: Data

        public func header(_ name: String) -> String? {
            headers.last { $0.0.lowercased() == name.lowercased() }?.1
        }

        public var text: String { String(decoding: body, as: UTF8.self) }
    }

    /// Sends a request; `upload` streams a file as the body.
    public static func request(
        _ method: String, _ url: String, headers: [String: String] = [:], token: String? = nil,
        upload: URL? = nil, data: Data? = nil, output: URL? = nil, options: [String] = []
    ) throws -> Response {
        let directory = try Loopback.temporaryDirectory("curl")
        defer { try? FileManager.default.removeItem(at: directory) }
        let headerFile = directory.appendingPathComponent("headers")
        let bodyFile = output ?? directory.appendingPathComponent("body")
        var arguments = ["-s", "-X", method, "-D", headerFile.path, "-o", bodyFile.path, "-w", "%{http_code}"]
        if method == "HEAD" { arguments = ["-s", "-I", "-D", headerFile.path, "-o", "/dev/null", "-w", "%{http_code}"] }
        for (name, value) in headers.sorted(by: { $0.key < $1.key }) { arguments += ["-H", "\(name): \(value)"] }
        if let token { arguments += ["-u", "workload:\(token)"] }
        if let upload { arguments += ["-T", upload.path] }
        if let data {
            let file = directory.appendingPathComponent("data")
            try data.write(to: file)
            arguments += ["--data-binary", "@\(file.path)"]
        }
        arguments += options
        arguments.append(url)
        let status = Int(try runCommand("/usr/bin/curl", arguments).trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        let headerText = (try? String(contentsOf: headerFile, encoding: .utf8)) ?? ""
        let headers = headerText.split(whereSeparator: \.isNewline).compactMap { line -> (String, String)? in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            return (String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        }
        let body = output == nil ? ((try? Data(contentsOf: bodyFile)) ?? Data()) : Data()
        SecretEvidence.keepResponse(head: headerText, body: body)
        return Response(status: status, headers: headers, body: body)
    }
}
