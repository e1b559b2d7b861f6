import AsyncHTTPClient
public import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL
import OCIWorkloadIdentity

/// Reads clusters' OIDC discovery documents and key sets over HTTP(S), for
/// ``OCIWorkloadIdentity/ServiceAccountTokenVerifier``.
///
/// Inside a cluster the issuer is usually the API server itself
/// (`https://kubernetes.default.svc.cluster.local`), whose certificate is signed by the
/// cluster's CA and whose discovery endpoints answer service accounts: the fetcher trusts
/// `caFile` besides the system's authorities and, to the API server's own addresses only,
/// sends the proxy's own service account token (read from `tokenFile` on every fetch, as
/// kubelet rotates it). Answers are read up to 1 MiB, within 10 seconds.
public final class ServiceAccountKeyFetcher: Sendable {
    /// Where a pod finds its cluster's CA and its own service account token.
    public static let inClusterCAFile = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    public static let inClusterTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    /// The most a discovery document or key set may be.
    static let sizeLimit = 1 << 20

    private let client: HTTPClient
    private let tokenFile: String?
    private let tokenHosts: Set<String>

    /// A fetcher trusting `caFile` (PEM) besides the system's authorities, and sending the
    /// token in `tokenFile` to `tokenHosts` (the API server's names; by default the in-cluster
    /// ones and `$KUBERNETES_SERVICE_HOST`).
    public init(caFile: String? = nil, tokenFile: String? = nil, tokenHosts: Set<String>? = nil) throws {
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        configuration.timeout.connect = .seconds(10)
        configuration.timeout.read = .seconds(10)
        var tls = TLSConfiguration.makeClientConfiguration()
        if let caFile {
            tls.additionalTrustRoots = [.file(caFile)]
            _ = try NIOSSLCertificate.fromPEMFile(caFile)  // A bad file fails now, not at the first token.
        }
        configuration.tlsConfiguration = tls
        client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        self.tokenFile = tokenFile
        var hosts: Set<String> = ["kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "kubernetes.default"]
        if let serviceHost = ProcessInfo.processInfo.environment["KUBERNETES_SERVICE_HOST"] { hosts.insert(serviceHost) }
        self.tokenHosts = tokenHosts ?? hosts
    }

    /// The document at `url`, or an error naming the URL and what went wrong.
    public func fetch(_ url: String) async throws -> Data {
        var request = HTTPClientRequest(url: url)
        request.headers.add(name: "Accept", value: "application/json")
        if let tokenFile, let host = URL(string: url)?.host, tokenHosts.contains(host),
            let token = try? String(contentsOfFile: tokenFile, encoding: .utf8)
        {
            request.headers.add(name: "Authorization", value: "Bearer " + token.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        let response: HTTPClientResponse
        do {
            response = try await client.execute(request, timeout: .seconds(10))
        } catch {
            throw ServiceAccountTokenError("\(url) could not be read: \(error)")
        }
        guard response.status == .ok else {
            throw ServiceAccountTokenError("\(url) answered \(response.status.code)")
        }
        do {
            let body = try await response.body.collect(upTo: Self.sizeLimit)
            return Data(body.readableBytesView)
        } catch {
            throw ServiceAccountTokenError("\(url) answered more than \(Self.sizeLimit) bytes, or failed mid-answer")
        }
    }

    /// Closes its connections.
    public func shutdown() async {
        try? await client.shutdown()
    }
}
