import ArgumentParser
import Foundation
import OCIProxyToken
import OCIReference

/// `oci-connector-config keys generate`
struct KeysCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys", abstract: "Manage the keys that sign and verify proxy tokens.", subcommands: [Generate.self])

    struct Generate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a new Ed25519 signing key (mode 0600) and its verification key as JWK files.")

        @Option(help: "The directory to write signing-key.jwk and verification-key.jwk into.")
        var out: String

        @Flag(help: "Replace existing key files.")
        var force = false

        func run() throws {
            let directory = URL(fileURLWithPath: out)
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            let signingFile = directory.appendingPathComponent("signing-key.jwk")
            let verificationFile = directory.appendingPathComponent("verification-key.jwk")
            if !force, FileManager.default.fileExists(atPath: signingFile.path) {
                throw ToolFailure("\(signingFile.path) exists; pass --force to replace it")
            }
            let signer = ProxyTokenSigner()
            try writePrivately(signer.jwk, to: signingFile)
            try signer.verificationKey.jwk.write(to: verificationFile, options: .atomic)
            print("signing key:      \(signingFile.path)")
            print("verification key: \(verificationFile.path) (give this to the proxy with --token-keys)")
        }
    }
}

/// `oci-connector-config token`
struct TokenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token", abstract: "Mint a proxy token and print it.")

    @Option(help: "The connector(s), as NAMESPACE/NAME[,NAMESPACE/NAME…].")
    var connector: String

    @Option(help: "Actions: pull, push, delete (comma-separated).")
    var actions: String = "pull"

    @Option(help: "Lifetime, such as 30m, 2h or 90s.")
    var ttl: String = "30m"

    @Option(help: "Limit to upstream repositories matching these patterns ('*' within a path element, '**' across); repeatable.")
    var repository: [String] = []

    @Option(help: "The signing key written by 'keys generate'.")
    var signingKey: String

    @Option(help: "Who the token is for (the JWT subject).")
    var subject: String = "workload"

    func run() throws {
        print(
            try mintToken(
                connectors: connector, actions: actions, ttl: ttl, repositories: repository, signingKey: signingKey,
                subject: subject
            ).token)
    }
}

/// Mints a token after checking every argument.
func mintToken(connectors: String, actions: String, ttl: String, repositories: [String], signingKey: String, subject: String)
    throws -> (token: String, claims: ProxyTokenClaims)
{
    var ids: [String] = []
    for text in connectors.split(separator: ",") {
        do {
            ids.append(try ConnectorID(parsing: String(text)).description)
        } catch {
            throw ToolFailure("\(error)")
        }
    }
    guard !ids.isEmpty else { throw ToolFailure("--connector names no connector") }
    let actionList = actions.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
    let known: Set<String> = ["pull", "push", "delete"]
    guard !actionList.isEmpty, actionList.allSatisfy(known.contains) else {
        throw ToolFailure("--actions takes pull, push and delete, comma-separated")
    }
    guard let lifetime = parseDuration(ttl), lifetime > 0 else {
        throw ToolFailure("--ttl must be a duration such as 30m, 2h or 90s")
    }
    let signer: ProxyTokenSigner
    do {
        signer = try ProxyTokenSigner(contentsOf: URL(fileURLWithPath: signingKey))
    } catch {
        throw ToolFailure("\(error)")
    }
    let claims = ProxyTokenClaims(
        subject: subject, connectors: ids, actions: actionList, repositories: repositories.isEmpty ? nil : repositories,
        lifetime: lifetime)
    return (signer.sign(claims), claims)
}

/// `90s`, `30m`, `2h`, `1d`, or plain seconds.
func parseDuration(_ text: String) -> Int? {
    guard let last = text.last else { return nil }
    let units: [Character: Int] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
    if let unit = units[last] { return Int(text.dropLast()).map { $0 * unit } }
    return Int(text)
}

/// Writes a file that only its owner may read, atomically.
func writePrivately(_ data: Data, to url: URL) throws {
    let temporary = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).\(UUID().uuidString)")
    guard FileManager.default.createFile(atPath: temporary.path, contents: nil, attributes: [.posixPermissions: 0o600]) else {
        throw ToolFailure("cannot write \(url.path)")
    }
    let handle = try FileHandle(forWritingTo: temporary)
    try handle.write(contentsOf: data)
    try handle.close()
    guard rename(temporary.path, url.path) == 0 else {
        try? FileManager.default.removeItem(at: temporary)
        throw ToolFailure("cannot write \(url.path)")
    }
}
