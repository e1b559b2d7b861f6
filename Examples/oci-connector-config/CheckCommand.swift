import ArgumentParser
import AsyncHTTPClient
import OCIAuth
import OCIConnectors
import OCIReference

/// `oci-connector-config check`: is the connector's access to its registry working?
struct CheckCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Check a connector's credentials against its upstream registry.",
        discussion: """
            Pings /v2/, gets a token for the repository (or uses Basic auth) and confirms access with \
            a cheap request. Prints "ready" and exits 0, or prints the reason and exits 1.
            """)

    @Option(name: .customLong("connectors"), help: "Connector and Secret YAML: a file or a directory. Repeatable.")
    var connectorPaths: [String]

    @Option(help: "The connector, as NAMESPACE/NAME.")
    var connector: String

    @Option(help: "The repository to check (default: the connector's 'repository' auth parameter).")
    var repository: String?

    @Option(help: "The access to check: pull or push.")
    var action: HealthCheck.Action = .pull

    func run() async throws {
        let catalog: ConnectorCatalog
        let selected: Connector
        do {
            catalog = try ConnectorCatalog.load(from: connectorPaths)
            selected = try catalog.connector(try ConnectorID(parsing: connector))
        } catch let error as ConnectorConfigError {
            throw ToolFailure("\(error)")
        } catch let error as ReferenceError {
            throw ToolFailure("\(error)")
        }
        guard let repository = repository ?? selected.healthCheckRepository else {
            throw ToolFailure("no repository to check: pass --repository or set the connector's 'repository' auth parameter")
        }
        let httpClient = try UpstreamHTTPClient.make(for: selected)
        let outcome: Result<HealthCheck.Report, AuthError>
        do {
            let client = UpstreamClient(connector: selected, httpClient: httpClient, tokens: TokenCache())
            outcome = .success(try await HealthCheck(client: client).run(repository: repository, action: action))
        } catch {
            outcome = .failure(error)
        }
        try await httpClient.shutdown()
        switch outcome {
        case .success:
            print("ready")
        case .failure(let error):
            throw ToolFailure("not ready (\(error.code)): \(error.reason)")
        }
    }
}

extension HealthCheck.Action: ExpressibleByArgument {}
