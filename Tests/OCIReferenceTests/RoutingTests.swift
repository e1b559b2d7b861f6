import OCIReference
import Testing

private let digest = "sha256:" + String(repeating: "0123456789abcdef", count: 4)

@Suite("Splitting registry API paths")
struct RoutingTests {
    static let routes: [(String, RegistryRoute)] = [
        ("/v2/", .base),
        ("/v2/_catalog", .catalog),
        ("/v2/_catalog?n=10&last=a", .catalog),
        ("/v2/team/app/manifests/v1", .repository(name: "team/app", endpoint: .manifest(.tag("v1")))),
        (
            "/v2/team/app/manifests/\(digest)",
            .repository(name: "team/app", endpoint: .manifest(.digest(try! Digest(parsing: digest))))
        ),
        ("/v2/app/blobs/\(digest)", .repository(name: "app", endpoint: .blob(try! Digest(parsing: digest)))),
        ("/v2/app/blobs/uploads/", .repository(name: "app", endpoint: .uploadStart)),
        ("/v2/app/blobs/uploads", .repository(name: "app", endpoint: .uploadStart)),
        ("/v2/app/blobs/uploads/?digest=\(digest)", .repository(name: "app", endpoint: .uploadStart)),
        ("/v2/app/blobs/uploads/?mount=\(digest)&from=other", .repository(name: "app", endpoint: .uploadStart)),
        (
            "/v2/app/blobs/uploads/4f1c2d3e-aaaa-bbbb-cccc-123456789abc?_state=abc",
            .repository(name: "app", endpoint: .upload(id: "4f1c2d3e-aaaa-bbbb-cccc-123456789abc"))
        ),
        ("/v2/a/b/c/tags/list", .repository(name: "a/b/c", endpoint: .tagList)),
        ("/v2/a/tags/list?n=2&last=v1", .repository(name: "a", endpoint: .tagList)),
        (
            "/v2/a/referrers/\(digest)?artifactType=application%2Fvnd.example",
            .repository(name: "a", endpoint: .referrers(try! Digest(parsing: digest)))
        ),
        // Repositories whose own elements are named like endpoints.
        ("/v2/a/blobs/uploads/blobs/uploads/", .repository(name: "a/blobs/uploads", endpoint: .uploadStart)),
        ("/v2/blobs/blobs/\(digest)", .repository(name: "blobs", endpoint: .blob(try! Digest(parsing: digest)))),
        ("/v2/manifests/manifests/manifests", .repository(name: "manifests", endpoint: .manifest(.tag("manifests")))),
        ("/v2/tags/tags/list", .repository(name: "tags", endpoint: .tagList)),
        ("/v2/uploads/blobs/uploads/uploads", .repository(name: "uploads", endpoint: .upload(id: "uploads"))),
        ("/v2/x/manifests/y/tags/list", .repository(name: "x/manifests/y", endpoint: .tagList)),
        ("/v2/x/blobs/uploads/manifests/latest", .repository(name: "x/blobs/uploads", endpoint: .manifest(.tag("latest")))),
        ("/v2/x/referrers/blobs/\(digest)", .repository(name: "x/referrers", endpoint: .blob(try! Digest(parsing: digest)))),
    ]

    @Test(arguments: routes)
    func splits(_ path: String, _ expected: RegistryRoute) throws {
        #expect(try RegistryRoute(path: path) == expected)
    }

    static let badRoutes: [(String, ReferenceError.Code)] = [
        ("/v1/", .unknownRoute),
        ("/v2", .unknownRoute),
        ("/v2/app", .unknownRoute),
        ("/v2/app/manifests", .unknownRoute),
        ("/v2/app/unknown/thing", .unknownRoute),
        ("/v2/manifests/v1", .unknownRoute),
        ("/v2/app/tags/", .unknownRoute),
        ("/v2/App/manifests/v1", .uppercaseRepository),
        ("/v2/a//b/manifests/v1", .invalidFormat),
        ("/v2/a/manifests/-bad", .invalidTag),
        ("/v2/a/manifests/sha256:short", .invalidDigest),
        ("/v2/a/blobs/latest", .invalidDigest),
        ("/v2/a/referrers/v1", .invalidDigest),
        ("/v2/a/blobs/uploads/bad:id", .invalidUploadID),
        ("/v2/\(String(repeating: "a", count: 256))/manifests/v1", .nameTooLong),
    ]

    @Test(arguments: badRoutes)
    func rejects(_ path: String, _ code: ReferenceError.Code) {
        #expect {
            _ = try RegistryRoute(path: path)
        } throws: { error in
            (error as? ReferenceError)?.code == code
        }
    }

    @Test func endpointPathsRoundTrip() throws {
        for (path, route) in Self.routes {
            guard case .repository(let name, let endpoint) = route else { continue }
            let rebuilt = "/v2/\(name)/\(endpoint.path)"
            #expect(try RegistryRoute(path: rebuilt) == route, "\(path)")
        }
    }

    static let connectorRoutes: [(String, ConnectorRoute)] = [
        ("/v2/", ConnectorRoute(connector: nil, route: .base)),
        (
            "/v2/namespaces/team-a/connectors/harbor/",
            ConnectorRoute(connector: try! ConnectorID(parsing: "team-a/harbor"), route: .base)
        ),
        (
            "/v2/namespaces/team-a/connectors/harbor/_catalog",
            ConnectorRoute(connector: try! ConnectorID(parsing: "team-a/harbor"), route: .catalog)
        ),
        (
            "/v2/namespaces/team-a/connectors/harbor/test/abc/manifests/v1",
            ConnectorRoute(
                connector: try! ConnectorID(parsing: "team-a/harbor"),
                route: .repository(name: "test/abc", endpoint: .manifest(.tag("v1"))))
        ),
        (
            "/v2/namespaces/ns/connectors/my.registry/namespaces/x/connectors/y/app/blobs/uploads/",
            ConnectorRoute(
                connector: try! ConnectorID(parsing: "ns/my.registry"),
                route: .repository(name: "namespaces/x/connectors/y/app", endpoint: .uploadStart))
        ),
        (
            "/v2/namespaces/ns/connectors/c/tags/blobs/uploads/abc?_state=x",
            ConnectorRoute(
                connector: try! ConnectorID(parsing: "ns/c"),
                route: .repository(name: "tags", endpoint: .upload(id: "abc")))
        ),
    ]

    @Test(arguments: connectorRoutes)
    func splitsConnectorPaths(_ path: String, _ expected: ConnectorRoute) throws {
        #expect(try ConnectorRoute(pathFormPath: path) == expected)
    }

    static let badConnectorRoutes: [(String, ReferenceError.Code)] = [
        ("/v2/team/app/manifests/v1", .unknownRoute),
        ("/v2/namespaces/team-a/connectors/harbor", .unknownRoute),
        ("/v2/namespaces/Team/connectors/harbor/app/manifests/v1", .invalidConnector),
        ("/v2/namespaces/a.b/connectors/harbor/app/manifests/v1", .invalidConnector),
        ("/v2/namespaces/team-a/connectors/harbor/manifests/v1", .unknownRoute),
        ("/v2/namespaces/team-a/connectors/harbor/App/manifests/v1", .uppercaseRepository),
    ]

    @Test(arguments: badConnectorRoutes)
    func rejectsConnectorPaths(_ path: String, _ code: ReferenceError.Code) {
        #expect {
            _ = try ConnectorRoute(pathFormPath: path)
        } throws: { error in
            (error as? ReferenceError)?.code == code
        }
    }
}
