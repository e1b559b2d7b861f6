import AsyncHTTPClient
import Foundation
import NIOCore
import OCIConnectors
import OCIReference

/// Checks that a connector's credentials work against its upstream: the reference system's
/// `AuthReady` condition.
///
/// It pings `/v2/`, gets a token for the repository (or uses Basic), and confirms access with a
/// cheap request: listing one tag for `pull`, or opening and cancelling an upload for `push`.
public struct HealthCheck: Sendable {
    /// What to check access for.
    public enum Action: String, Sendable, CaseIterable {
        case pull
        case push
    }

    /// The outcome of a passing check.
    public struct Report: Sendable {
        /// How the upstream authenticates.
        public let method: UpstreamClient.Method
        /// The repository checked.
        public let repository: String
    }

    let client: UpstreamClient

    /// Creates a check that uses `client`.
    public init(client: UpstreamClient) {
        self.client = client
    }

    /// Runs the check.
    ///
    /// - Throws: ``AuthError`` with ``AuthError/Code/unreachable``, ``AuthError/Code/tlsFailure``,
    ///   ``AuthError/Code/badCredentials``, ``AuthError/Code/insufficientScope`` (naming the
    ///   actions granted) or ``AuthError/Code/repositoryNotFound``.
    public func run(repository: String, action: Action) async throws(AuthError) -> Report {
        let method = try await client.method()
        if case .basic = method, client.connector.credentials == nil {
            throw AuthError(
                .badCredentials, "\(client.connector.address.baseURL) requires credentials and the connector has none")
        }
        let actions = action == .push ? ["pull", "push"] : ["pull"]
        let scopes: ScopeSet = [.repository(repository, actions: actions)]
        let authorization = try await client.authorization(for: scopes)

        let response: HTTPClientResponse
        var request: HTTPClientRequest
        switch action {
        case .pull:
            request = HTTPClientRequest(url: client.url("/v2/\(repository)/tags/list?n=1"))
            request.method = .GET
        case .push:
            request = HTTPClientRequest(url: client.url("/v2/\(repository)/blobs/uploads/"))
            request.method = .POST
            request.headers.add(name: "Content-Length", value: "0")
        }
        if let header = authorization.headerValue { request.headers.add(name: "Authorization", value: header) }
        response = try await client.send(request)
        let body = (try? await response.body.collect(upTo: 64 * 1024)).map { String(buffer: $0) } ?? ""

        switch response.status.code {
        case 200..<300:
            if action == .push, let location = response.headers.first(name: "Location") {
                await cancelUpload(location: location, authorization: authorization.headerValue)
            }
            return Report(method: method, repository: repository)
        case 404 where body.contains("NAME_UNKNOWN") || action == .pull:
            throw AuthError(
                .repositoryNotFound, "repository \(repository) does not exist on \(client.connector.address.registryName)")
        case 401, 403:
            if case .basic = method, response.status.code == 401 {
                throw AuthError(.badCredentials, "\(client.connector.address.baseURL) rejected the credentials")
            }
            throw AuthError(
                .insufficientScope, insufficientScopeMessage(repository: repository, actions: actions, token: authorization.token)
            )
        default:
            throw AuthError(
                .unexpectedResponse,
                "\(client.connector.address.baseURL) answered \(response.status.code) \(response.status.reasonPhrase) for \(repository)"
            )
        }
    }

    private func insufficientScopeMessage(repository: String, actions: [String], token: RegistryToken?) -> String {
        let wanted = actions.joined(separator: ",")
        guard let granted = token?.grantedAccess else {
            return "the credentials may not \(wanted) repository \(repository)"
        }
        let actionsGranted = granted["repository:\(repository)"] ?? []
        let grantedText = actionsGranted.isEmpty ? "none" : Array(Set(actionsGranted)).sorted().joined(separator: ",")
        return "the credentials may not \(wanted) repository \(repository) (granted: \(grantedText))"
    }

    /// The push check opened an upload; close it so nothing is left behind.
    private func cancelUpload(location: String, authorization: String?) async {
        let url = location.hasPrefix("/") ? client.url(location) : location
        guard url.hasPrefix(client.connector.address.baseURL) else { return }  // Never send credentials elsewhere.
        var request = HTTPClientRequest(url: url)
        request.method = .DELETE
        if let authorization { request.headers.add(name: "Authorization", value: authorization) }
        if let response = try? await client.send(request) {
            _ = try? await response.body.collect(upTo: 64 * 1024)
        }
    }
}
