import ArgumentParser
import Foundation
import OCIReference

/// `oci-connector-config reference …`
struct ReferenceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reference",
        abstract: "Parse image references and rewrite them for a connector's proxy.",
        subcommands: [Parse.self, Rewrite.self]
    )

    struct Parse: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Parse and normalise an image reference.")

        @Argument(help: "The image reference, such as ubuntu:22.04 or harbor.example.com/team/app:v1.")
        var image: String

        @Flag(help: "Print one JSON object instead of a summary.")
        var json = false

        func run() throws {
            let reference = try readReference(image)
            if json {
                print(try ReferenceSummary(reference).jsonString())
            } else {
                print(ReferenceSummary(reference).text)
            }
        }
    }

    struct Rewrite: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Rewrite an upstream image reference to go through the connector proxy.")

        @Argument(help: "The image reference on the upstream registry.")
        var image: String

        @Option(help: "The connector, as NAMESPACE/NAME.")
        var connector: String

        @Option(help: "The connector's upstream registry address, such as https://harbor.example.com.")
        var upstream: String

        @Option(help: "The proxy's HOST[:PORT] (in the host form: the connector's own host). Optional with --host-form.")
        var proxy: String?

        @Flag(help: "Use the host form: the proxy answers on a host of the connector's own.")
        var hostForm = false

        @Option(help: "With --host-form and no --proxy: the pattern that names the connector's host.")
        var hostPattern: String = ConnectorHostPattern.kubernetesService.pattern

        func run() throws {
            let reference = try readReference(image)
            let address: ConnectorProxyAddress
            do {
                let connectorID = try ConnectorID(parsing: connector)
                let upstreamAddress = try RegistryAddress(parsing: upstream)
                let proxyHost: String
                if let proxy {
                    proxyHost = proxy
                } else if hostForm {
                    proxyHost = try ConnectorHostPattern(hostPattern).host(for: connectorID)
                } else {
                    throw ToolFailure("--proxy is required unless --host-form is given")
                }
                address = try ConnectorProxyAddress(
                    connector: connectorID, upstream: upstreamAddress, proxy: proxyHost,
                    form: hostForm ? .host : .path)
                print(try address.rewrite(reference).string)
            } catch let error as ReferenceError {
                throw ToolFailure("\(error)")
            }
        }
    }
}

private func readReference(_ image: String) throws -> ImageReference {
    do {
        return try ImageReference(parsing: image)
    } catch {
        throw ToolFailure("invalid image reference: \(error)")
    }
}

/// The parsed parts of a reference, for people and for scripts.
struct ReferenceSummary: Encodable {
    let registry: String
    let repository: String
    let tag: String?
    let digest: String?
    let normalized: String
    let familiar: String

    init(_ reference: ImageReference) {
        registry = reference.registry
        repository = reference.repository
        tag = reference.tag
        digest = reference.digest?.string
        normalized = reference.normalized
        familiar = reference.familiar
    }

    private enum CodingKeys: String, CodingKey {
        case registry, repository, tag, digest, normalized, familiar
    }

    // Absent parts are written as null, not left out, so scripts can rely on every key.
    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(registry, forKey: .registry)
        try container.encode(repository, forKey: .repository)
        try container.encode(tag, forKey: .tag)
        try container.encode(digest, forKey: .digest)
        try container.encode(normalized, forKey: .normalized)
        try container.encode(familiar, forKey: .familiar)
    }

    func jsonString() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }

    var text: String {
        """
        registry:   \(registry)
        repository: \(repository)
        tag:        \(tag ?? "(none)")
        digest:     \(digest ?? "(none)")
        normalized: \(normalized)
        familiar:   \(familiar)
        """
    }
}
