import OCIReference
import Testing

@testable import OCIConnectorProxy

/// The path a request takes upstream: the route's own path, for every kind of route.
@Suite("Upstream paths")
struct UpstreamPathTests {
    static let paths = [
        "/v2/",
        "/v2/_catalog",
        "/v2/team/app/manifests/v1.2.3",
        "/v2/library/ubuntu/manifests/sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
        "/v2/team/sub/app/blobs/sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
        "/v2/team/app/blobs/uploads/",
        "/v2/team/app/blobs/uploads/5b9a2c1e-0f1d-4c8e-9a55-0d6f3c1b7e21",
        "/v2/team/app/tags/list",
        "/v2/team/app/referrers/sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
        // A repository whose elements are named like endpoints.
        "/v2/a/blobs/uploads/manifests/latest",
    ]

    @Test(arguments: paths)
    func isTheRoutesOwnPath(_ path: String) throws {
        let route = try RegistryRoute(path: path)
        #expect(ConnectorProxy.upstreamPath(route) == path)
    }
}
