import ArgumentParser
import Foundation

/// `oci-connector-config`: everything a workload or an operator needs around the proxy, from the
/// command line.
@main
struct ConfigTool: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "oci-connector-config",
        abstract: "Image references, tokens and client configuration for the OCI connector proxy.",
        subcommands: [
            ReferenceCommand.self, CheckCommand.self, KeysCommand.self, TokenCommand.self, RenderCommand.self,
            CredentialHelperCommand.self, CredentialProviderCommand.self,
        ]
    )

    /// Run as `docker-credential-NAME` (a link to this executable), it is a credential helper.
    static func main() async {
        let name = URL(fileURLWithPath: CommandLine.arguments.first ?? "").lastPathComponent
        if name.hasPrefix("docker-credential-") {
            CredentialHelperCommand.main(Array(CommandLine.arguments.dropFirst()))
            return
        }
        await main(nil)
    }
}

/// Turns a library error into a one-line message on stderr and a non-zero exit.
struct ToolFailure: Error, CustomStringConvertible {
    let description: String

    init(_ message: String) { description = message }
}
