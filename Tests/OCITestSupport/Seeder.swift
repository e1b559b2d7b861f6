import Foundation

/// Puts images into a test registry with `curl`, independently of the code under test.
public enum Seeder {
    /// Pushes `image` as `repository:tag`. `user` authenticates with Basic, or, for a token
    /// registry, at the issuer.
    public static func push(
        _ image: TestImage, to registry: TestRegistry, repository: String, tag: String,
        user: (String, String)? = nil, issuer: TokenIssuer? = nil
    ) throws {
        var auth: [String] = []
        if let issuer, let user {
            let answer = try runCommand(
                "/usr/bin/curl",
                [
                    "-sf", "-u", "\(user.0):\(user.1)",
                    "\(issuer.realm)?service=\(issuer.service)&scope=repository:\(repository):pull,push",
                ])
            let json = try JSONSerialization.jsonObject(with: Data(answer.utf8)) as? [String: Any]
            guard let token = json?["token"] as? String else { throw TestSupportError("the issuer gave no token") }
            auth = ["-H", "Authorization: Bearer \(token)"]
        } else if let user {
            auth = ["-u", "\(user.0):\(user.1)"]
        }
        let directory = try Loopback.temporaryDirectory("seed")
        defer { try? FileManager.default.removeItem(at: directory) }
        if let pem = registry.certificatePEM {
            let authority = directory.appendingPathComponent("ca.pem")
            try Data(pem.utf8).write(to: authority)
            auth += ["--cacert", authority.path]
        }
        for blob in [image.config, image.layer] {
            let file = directory.appendingPathComponent("blob")
            try blob.write(to: file)
            // Distribution 2.8 opens a session on POST and takes the bytes on the final PUT.
            let headers = try runCommand(
                "/usr/bin/curl",
                ["-sf", "-o", "/dev/null", "-D", "-", "-X", "POST"] + auth
                    + ["\(registry.url)/v2/\(repository)/blobs/uploads/"])
            guard
                let location = headers.split(whereSeparator: \.isNewline)
                    .first(where: { $0.lowercased().hasPrefix("location:") })?
                    .dropFirst("location:".count).trimmingCharacters(in: .whitespaces)
            else { throw TestSupportError("no upload location from \(registry.url)") }
            let url =
                (location.hasPrefix("/") ? registry.url + location : location)
                + (location.contains("?") ? "&" : "?") + "digest=\(sha256Digest(blob))"
            try runCommand(
                "/usr/bin/curl",
                [
                    "-sf", "-X", "PUT", "-H", "Content-Type: application/octet-stream",
                    "--data-binary", "@\(file.path)",
                ] + auth + [url])
        }
        let manifest = directory.appendingPathComponent("manifest")
        try image.manifest.write(to: manifest)
        try runCommand(
            "/usr/bin/curl",
            [
                "-sf", "-X", "PUT", "-H", "Content-Type: \(TestImage.manifestMediaType)",
                "--data-binary", "@\(manifest.path)",
            ] + auth
                + ["\(registry.url)/v2/\(repository)/manifests/\(tag)"])
    }
}

extension Seeder {
    /// Pushes a fresh small image as `repository:v1` to an anonymous registry.
    @discardableResult
    public static func pushReturningImage(to registry: TestRegistry, repository: String) throws -> TestImage {
        let image = TestImage(layerSize: 2048, seed: UInt8.random(in: 1...250))
        try push(image, to: registry, repository: repository, tag: "v1")
        return image
    }
}
