import AsyncHTTPClient
import NIOCore
import OCIAuth

/// Following an upstream's redirects: registries send blob reads to object storage.
extension ConnectorProxy {
    /// Follows an upstream redirect (registries send blob GETs to object storage), sending
    /// credentials only back to the upstream's own origin.
    func follow(_ first: HTTPClientResponse, from request: HTTPClientRequest, upstream: Upstream) async throws(AuthError) -> HTTPClientResponse {
        guard (300..<400).contains(first.status.code), let location = first.headers.first(name: "Location") else { return first }
        _ = try? await first.body.collect(upTo: 64 * 1024)
        return try await follow(location, from: request, upstream: upstream)
    }

    /// The most redirects followed for one request: more is a loop, or a registry misconfigured.
    static let redirectLimit = 5

    /// Follows a redirect to `firstLocation`, and up to ``redirectLimit`` in all; a chain that is
    /// still redirecting then ends in an error, never in a redirect relayed to the client.
    func follow(_ firstLocation: String, from request: HTTPClientRequest, upstream: Upstream) async throws(AuthError) -> HTTPClientResponse {
        var response = try await fetch(firstLocation, from: request, upstream: upstream)
        for hop in 1...Self.redirectLimit {
            guard (300..<400).contains(response.status.code), let location = response.headers.first(name: "Location") else { break }
            _ = try? await response.body.collect(upTo: 64 * 1024)
            guard hop < Self.redirectLimit else {
                throw AuthError(.unexpectedResponse, "the upstream redirected more than \(Self.redirectLimit) times")
            }
            response = try await fetch(location, from: request, upstream: upstream)
        }
        return response
    }

    /// One step of a redirect: with the connector's credentials on its own origin, without
    /// elsewhere. A 401 is never relayed: on the upstream's origin it refuses the connector's
    /// credentials, elsewhere (object storage) the client could do nothing about it.
    func fetch(_ location: String, from request: HTTPClientRequest, upstream: Upstream) async throws(AuthError) -> HTTPClientResponse {
        // The HTTP client also speaks `http+unix` and `unix`: an upstream must not be able to
        // point the proxy at a socket on its own host. (The location itself may hold a
        // signature, so it is not repeated.)
        let scheme = location.prefix(8).lowercased()
        guard location.hasPrefix("/") || scheme.hasPrefix("http://") || scheme.hasPrefix("https://") else {
            throw AuthError(.unreachable, "the upstream redirected to a location that is not an http or https URL")
        }
        var current = request
        current.url = location.hasPrefix("/") ? upstream.client.url(location) : location
        current.headers.remove(name: "Authorization")
        let response: HTTPClientResponse
        let onOrigin = current.url.hasPrefix(upstream.client.connector.address.baseURL + "/")
        if onOrigin {
            response = try await upstream.client.execute(current, scopes: .empty, replayable: true)
        } else {
            do {
                response = try await upstream.http.execute(current, timeout: configuration.requestTimeout)
            } catch {
                throw AuthError(.unreachable, "the redirect target is unreachable")
            }
        }
        guard response.status == .unauthorized else { return response }
        _ = try? await response.body.collect(upTo: 64 * 1024)
        if onOrigin {
            throw AuthError(.badCredentials, "the upstream refused the connector's credentials after a redirect")
        }
        throw AuthError(.unexpectedResponse, "the storage the upstream redirected to refused the read (401)")
    }
}
