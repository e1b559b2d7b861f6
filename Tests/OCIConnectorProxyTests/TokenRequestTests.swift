import Foundation
import OCIConnectors
import OCIProxyToken
import OCIReference
import Testing

@testable import OCIConnectorProxy

@Suite("Token endpoint requests")
struct TokenRequestTests {
    /// (query, form, scopes read)
    static let reads: [(String?, String?, [TokenRequest.Scope])] = [
        // docker, containerd, skopeo: one scope per parameter.
        (
            "service=oci-connector-proxy&scope=repository:namespaces/team-a/connectors/up/team/app:pull,push",
            nil, [.init(name: "namespaces/team-a/connectors/up/team/app", actions: ["pull", "push"])]
        ),
        // A mount: the target and the source.
        (
            "scope=repository%3Ateam%2Fapp%3Apull%2Cpush&scope=repository:team/base:pull", nil,
            [.init(name: "team/app", actions: ["pull", "push"]), .init(name: "team/base", actions: ["pull"])]
        ),
        // Several in one parameter, space-separated (form encoding: +).
        (
            "scope=repository:a:pull+repository:b:delete", nil,
            [.init(name: "a", actions: ["pull"]), .init(name: "b", actions: ["delete"])]
        ),
        ("scope=repository:a:*", nil, [.init(name: "a", actions: ["pull", "push", "delete"])]),
        // Other types and malformed scopes are left out.
        ("scope=registry:catalog:*&scope=repository::pull&scope=repository:a:&scope=nonsense", nil, []),
        // docker login: no scope.
        ("service=oci-connector-proxy&account=ci", nil, []),
        // The OAuth2 form (containerd with credentials).
        (
            nil,
            "grant_type=password&username=ci&password=s3cret&service=oci-connector-proxy&scope=repository:a:pull&client_id=containerd-client",
            [.init(name: "a", actions: ["pull"])]
        ),
    ]

    @Test(arguments: reads) func readsScopesAsClientsSendThem(query: String?, form: String?, scopes: [TokenRequest.Scope]) throws
    {
        let request = try TokenRequest(query: query?[...], form: form)
        #expect(request.scopes == scopes)
    }

    @Test func formCredentialsBecomeBasicAndOtherGrantsAreRefused() throws {
        let request = try TokenRequest(query: nil, form: "grant_type=password&username=ci&password=p%40ss")
        #expect(request.authorization(header: "Basic other") == "Basic " + Data("ci:p@ss".utf8).base64EncodedString())
        #expect(try TokenRequest(query: "scope=repository:a:pull", form: nil).authorization(header: "Bearer x") == "Bearer x")
        for form in ["grant_type=refresh_token&refresh_token=x", "username=a&password=b", ""] {
            #expect(throws: RegistryErrorResponse.self, "\(form)") { try TokenRequest(query: nil, form: form) }
        }
    }

    /// Scopes are narrowed to what the credentials grant; names that lead to no connector go.
    @Test func theTokenHoldsOnlyWhatIsGranted() throws {
        let binding = ConnectorBinding(
            namespace: "team-a", name: "b", connectors: ["up"], subjects: [.serviceAccount(namespace: "team-a", name: "ci")],
            actions: ["pull", "push"], repositories: ["team/*"])
        let grant = ClientGrant(
            serviceAccount: .init(
                issuer: "i", namespace: "team-a", name: "ci", notBefore: .distantPast, expiresAt: .distantFuture),
            catalog: ConnectorCatalog([], bindings: [binding]))
        let request = try TokenRequest(
            query:
                "scope=repository:namespaces/team-a/connectors/up/team/app:pull,push,delete&scope=repository:namespaces/team-a/connectors/up/other/app:pull&scope=repository:namespaces/team-b/connectors/up/team/app:pull&scope=repository:nowhere:pull&scope=repository:namespaces/team-a/connectors/up/team/app:pull",
            form: nil)
        let access = request.access(granted: grant) { name in
            guard let split = try? ConnectorRoute(pathFormPath: "/v2/\(name)/tags/list"), let id = split.connector,
                case .repository(let repository, _) = split.route
            else { return nil }
            return (id, repository)
        }
        #expect(access == [.init(connector: "team-a/up", repository: "team/app", actions: ["pull", "push"])])
        let claims = ProxyTokenClaims(subject: "ci", access: access, lifetime: 60)
        #expect(claims.allows(connector: "team-a/up", action: "push", repository: "team/app"))
        #expect(!claims.allows(connector: "team-a/up", action: "pull", repository: "team/other"))
        #expect(!claims.allows(connector: "team-a/up", action: "delete", repository: "team/app"))
        #expect(claims.allows(connector: "team-a/up", action: "pull", repository: nil))
        #expect(!claims.allows(connector: "team-b/up", action: "pull", repository: nil))
        // It survives signing and verifying.
        let signer = ProxyTokenSigner()
        let verified = try ProxyTokenVerifier(keys: [signer.verificationKey]).verify(signer.sign(claims))
        #expect(verified.access == access)
    }
}
