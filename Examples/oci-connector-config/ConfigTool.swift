import ArgumentParser

/// `oci-connector-config`: everything a workload or an operator needs around the proxy, from the
/// command line.
@main
struct ConfigTool: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "oci-connector-config",
        abstract: "Image references, tokens and client configuration for the OCI connector proxy.",
        subcommands: [ReferenceCommand.self, CheckCommand.self, KeysCommand.self, TokenCommand.self, RenderCommand.self]
    )
}

/// Turns a library error into a one-line message on stderr and a non-zero exit.
struct ToolFailure: Error, CustomStringConvertible {
    let description: String

    init(_ message: String) { description = message }
}
