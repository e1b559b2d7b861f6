import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import OCIAuth
import OCIProxyToken
import OCIReference

/// `_catalog` for a token limited to some repositories: only the names it may pull.
///
/// Filtering the upstream's pages one by one would not do: the `Link` to the next page carries
/// the upstream's last name, so a client asking for one name a page would read every name of
/// the upstream from the links. Instead the proxy walks the upstream's catalog itself, in pages
/// of up to 1000 names, until it has the `n` names the client asked for (the registry's own
/// maximum and default, 1000), and the `Link` it answers names the last name it returned. The
/// catalog is sorted, so that is where the next page starts. A catalog longer than
/// ``upstreamPageLimit`` pages is refused rather than read on.
enum CatalogFilter {
    /// The most names one page holds, the client's and the upstream's (distribution's default).
    static let pageSize = 1000
    /// The most upstream pages read for one answer.
    static let upstreamPageLimit = 100
    /// The largest upstream page read.
    static let pageBytesLimit = 4 * 1024 * 1024

    struct Page: Codable {
        var repositories: [String]?
    }

    /// The client's `n` and `last`, from its query.
    static func pagination(_ query: String?) throws(RegistryErrorResponse) -> (n: Int, last: String?) {
        var n = pageSize
        var last: String?
        for part in (query ?? "").split(separator: "&") {
            let pair = part.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let value = pair.count > 1 ? UploadStartQuery.decode(pair[1]) : ""
            switch pair[0] {
            case "n":
                guard let value, let number = Int(value), (0...pageSize).contains(number) else {
                    throw RegistryErrorResponse(
                        .badRequest, "PAGINATION_NUMBER_INVALID", "n must be a number from 0 to \(pageSize)")
                }
                n = number
            case "last":
                last = value
            default:
                break
            }
        }
        return (n, last)
    }

    /// The names of one upstream page, or `nil` if it is not a catalog page.
    static func names(in body: ByteBuffer) -> [String]? {
        (try? JSONDecoder().decode(Page.self, from: Data(body.readableBytesView)))?.repositories ?? nil
    }

    /// A catalog page's JSON.
    static func json(_ names: [String]) -> ByteBuffer {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .withoutEscapingSlashes
        return ByteBuffer(bytes: (try? encoder.encode(Page(repositories: names))) ?? Data(#"{"repositories":[]}"#.utf8))
    }

    /// `value` percent-encoded for a query.
    static func queryValue(_ value: String) -> String {
        UploadStartQuery.encode(value).replacingOccurrences(of: "/", with: "%2F")
    }
}

extension ConnectorProxy {
    /// Answers `GET _catalog` for a token limited to some repositories (``CatalogFilter``).
    func filteredCatalog(_ plan: UpstreamPlan, claims: ClientGrant) async throws(RegistryErrorResponse) -> ForwardedAnswer {
        let upstream = plan.upstream
        let (wanted, start) = try CatalogFilter.pagination(plan.query)
        var names: [String] = []
        var cursor = start
        var more = false
        var pages = 0
        walk: while wanted > 0 {
            pages += 1
            guard pages <= CatalogFilter.upstreamPageLimit else {
                throw upstream.unavailable(
                    "its catalog is longer than \(CatalogFilter.upstreamPageLimit) pages of \(CatalogFilter.pageSize)")
            }
            let (page, hasNext) = try await catalogPage(after: cursor, upstream: upstream, scopes: plan.scopes)
            for repository in page
            where claims.allows(connector: upstream.client.connector.id, action: "pull", repository: repository) {
                guard names.count < wanted else {
                    more = true
                    break walk
                }
                names.append(repository)
            }
            guard hasNext, let last = page.last else { break }
            cursor = last
            if names.count == wanted {
                more = true
                break
            }
        }
        var headers: HTTPHeaders = [
            "Content-Type": "application/json; charset=utf-8", "Docker-Distribution-API-Version": "registry/2.0",
        ]
        if more, let last = names.last {
            let path = "/v2/" + (plan.prefix.isEmpty ? "" : plan.prefix + "/") + "_catalog"
            headers.add(
                name: "Link",
                value: "<\(plan.origin)\(path)?last=\(CatalogFilter.queryValue(last))&n=\(wanted)>; rel=\"next\"")
        }
        return .local(
            LocalAnswer(
                status: .ok, headers: headers, body: String(buffer: CatalogFilter.json(names)), detail: nil, log: plan.log))
    }

    /// One page of the upstream's catalog after `last`, and whether it has another.
    private func catalogPage(
        after last: String?, upstream: Upstream, scopes: ScopeSet
    ) async throws(RegistryErrorResponse) -> ([String], Bool) {
        var path = "/v2/_catalog?n=\(CatalogFilter.pageSize)"
        if let last { path += "&last=" + CatalogFilter.queryValue(last) }
        var request = HTTPClientRequest(url: upstream.client.url(path))
        request.method = .GET
        let response: HTTPClientResponse
        let body: ByteBuffer
        do {
            response = try await upstream.client.execute(request, scopes: scopes, replayable: true)
        } catch {
            throw upstream.failure(error, scopes: scopes)
        }
        do {
            body = try await response.body.collect(upTo: CatalogFilter.pageBytesLimit)
        } catch {
            throw upstream.unavailable("its catalog page is larger than \(CatalogFilter.pageBytesLimit) bytes")
        }
        if response.status == .unauthorized { throw upstream.refused(scopes) }
        guard response.status == .ok, let names = CatalogFilter.names(in: body) else {
            throw upstream.unavailable("its catalog answered \(response.status.code)")
        }
        return (names, response.headers.first(name: "Link") != nil)
    }
}
