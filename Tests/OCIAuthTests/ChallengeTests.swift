import Foundation
import OCIReference
import Testing

@testable import OCIAuth

@Suite("WWW-Authenticate parsing")
struct ChallengeTests {
    static let vectors: [(String, [AuthChallenge])] = [
        // CNCF distribution's token challenge.
        (
            #"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/ubuntu:pull""#,
            [
                AuthChallenge(
                    scheme: "Bearer",
                    parameters: [
                        "realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                        "scope": "repository:library/ubuntu:pull",
                    ])
            ]
        ),
        // Harbor, with spaces after commas and a multi-scope value.
        (
            #"Bearer realm="https://harbor.example.com/service/token", service="harbor-registry", scope="repository:a/b:pull,push repository:c/d:pull""#,
            [
                AuthChallenge(
                    scheme: "bearer",
                    parameters: [
                        "realm": "https://harbor.example.com/service/token", "service": "harbor-registry",
                        "scope": "repository:a/b:pull,push repository:c/d:pull",
                    ])
            ]
        ),
        // htpasswd registry.
        (#"Basic realm="test-registry""#, [AuthChallenge(scheme: "basic", parameters: ["realm": "test-registry"])]),
        // Case-insensitive scheme and parameter names, token values.
        (
            "BASIC REALM=simple, Charset=UTF-8",
            [AuthChallenge(scheme: "basic", parameters: ["realm": "simple", "charset": "UTF-8"])]
        ),
        // RFC 9110's example: two challenges, an escaped quote, and a comma inside quotes.
        (
            #"Newauth realm="apps", type=1, title="Login to \"apps\", please", Basic realm="simple""#,
            [
                AuthChallenge(
                    scheme: "newauth", parameters: ["realm": "apps", "type": "1", "title": #"Login to "apps", please"#]),
                AuthChallenge(scheme: "basic", parameters: ["realm": "simple"]),
            ]
        ),
        // token68, and a bare scheme between others, with empty list elements.
        (
            "Negotiate YIIB3gYGKwYBBQUCoII==, , NTLM, Bearer realm=x",
            [
                AuthChallenge(scheme: "negotiate", token68: "YIIB3gYGKwYBBQUCoII=="),
                AuthChallenge(scheme: "ntlm"),
                AuthChallenge(scheme: "bearer", parameters: ["realm": "x"]),
            ]
        ),
        ("Bearer", [AuthChallenge(scheme: "bearer")]),
        ("", []),
        // Whitespace around "=" (BWS).
        (#"Bearer realm = "r" , service= s"#, [AuthChallenge(scheme: "bearer", parameters: ["realm": "r", "service": "s"])]),
    ]

    @Test(arguments: vectors)
    func parses(_ header: String, _ expected: [AuthChallenge]) throws {
        #expect(try AuthChallenge.parse(header) == expected)
    }

    @Test func challengesAcrossSeveralHeaders() throws {
        let challenges = try AuthChallenge.parse([#"Basic realm="a""#, #"Bearer realm="https://t/token",service="s""#])
        #expect(challenges.map(\.scheme) == ["basic", "bearer"])
        #expect(challenges[1][parameter: "SERVICE"] == "s")
    }

    static let malformed: [String] = [
        #"Bearer realm="unterminated"#,
        #"Bearer realm="bad escape\"#,
        #"Bearer realm="x" service="y""#,
        #"Bearer realm="x", =y"#,
        #"Bearer realm="a", realm="b""#,
        "=realm",
        #"Bearer realm="control\#u{01}char""#,
        "Bearer @@@",
    ]

    @Test(arguments: malformed)
    func rejectsMalformedHeaders(_ header: String) {
        #expect(throws: ChallengeParseError.self) { try AuthChallenge.parse(header) }
    }

    @Test func neverTrapsOnArbitraryInput() {
        // Every prefix of every vector, and some noise: an error or a value, never a crash.
        var inputs = Self.vectors.map(\.0) + Self.malformed
        inputs += inputs.flatMap { text in (0..<text.count).map { String(text.prefix($0)) } }
        inputs += ["\"", ",", "=", "==", "a=\"", "Bearer ,,,=", "\\", "Basic realm=\"\\\""]
        for input in inputs {
            _ = try? AuthChallenge.parse(input)
        }
    }
}

@Suite("Scopes")
struct ScopeTests {
    @Test(
        arguments: [
            ("repository:team/app:pull", "repository", nil, "team/app", ["pull"]),
            ("repository:team/app:push,pull,pull", "repository", nil, "team/app", ["pull", "push"]),
            ("registry:catalog:*", "registry", nil, "catalog", ["*"]),
            ("repository(plugin):vieux/sshfs:pull", "repository", "plugin", "vieux/sshfs", ["pull"]),
            ("repository:localhost:5000/app:pull", "repository", nil, "localhost:5000/app", ["pull"]),
            ("repository:app:", "repository", nil, "app", []),
        ] as [(String, String, String?, String, [String])])
    func parses(_ text: String, _ type: String, _ resourceClass: String?, _ name: String, _ actions: [String]) throws {
        let scope = try #require(Scope(parsing: text))
        #expect(scope.resourceType == type)
        #expect(scope.resourceClass == resourceClass)
        #expect(scope.resourceName == name)
        #expect(scope.actions == actions)
    }

    @Test(arguments: ["", "repository", "repository:app", ":app:pull", "repository():app:pull"])
    func rejects(_ text: String) {
        #expect(Scope(parsing: text) == nil)
    }

    @Test func setsMergeAndSort() {
        let set = ScopeSet(parsing: "repository:b:push repository:a:pull repository:b:pull registry:catalog:* repository:a:pull")
        #expect(set.description == "registry:catalog:* repository:a:pull repository:b:pull,push")
        #expect(set == ScopeSet(parsing: "repository:b:pull,push registry:catalog:* repository:a:pull"))
        #expect(set.covers(ScopeSet(parsing: "repository:b:push")))
        #expect(!set.covers(ScopeSet(parsing: "repository:a:push")))
        #expect(ScopeSet(parsing: "registry:catalog:*").covers(ScopeSet(parsing: "registry:catalog:search")))
    }

    @Test func hintsFromMethodAndRoute() throws {
        let manifest = try RegistryRoute(path: "/v2/team/app/manifests/v1")
        #expect(ScopeHints.scopes(method: "GET", route: manifest).description == "repository:team/app:pull")
        #expect(ScopeHints.scopes(method: "HEAD", route: manifest).description == "repository:team/app:pull")
        #expect(ScopeHints.scopes(method: "PUT", route: manifest).description == "repository:team/app:pull,push")
        #expect(ScopeHints.scopes(method: "DELETE", route: manifest).description == "repository:team/app:delete")
        let upload = try RegistryRoute(path: "/v2/team/app/blobs/uploads/")
        #expect(ScopeHints.scopes(method: "POST", route: upload).description == "repository:team/app:pull,push")
        #expect(
            ScopeHints.scopes(method: "POST", route: upload, mountFrom: "team/base").description
                == "repository:team/app:pull,push repository:team/base:pull")
        let session = try RegistryRoute(path: "/v2/team/app/blobs/uploads/abc")
        #expect(ScopeHints.scopes(method: "PATCH", route: session).description == "repository:team/app:pull,push")
        #expect(ScopeHints.scopes(method: "DELETE", route: session).description == "repository:team/app:pull,push")
        #expect(ScopeHints.scopes(method: "GET", route: .catalog).description == "registry:catalog:*")
        #expect(ScopeHints.scopes(method: "GET", route: .base).isEmpty)
    }
}

@Suite("Token endpoints and responses")
struct TokenEndpointTests {
    let httpsRegistry = try! RegistryAddress(parsing: "https://harbor.example.com")
    let httpRegistry = try! RegistryAddress(parsing: "http://127.0.0.1:5000")

    @Test func refusesARealmThatDowngradesToHTTP() {
        let challenge = AuthChallenge(scheme: "bearer", parameters: ["realm": "http://harbor.example.com/service/token"])
        #expect {
            _ = try TokenEndpoint(challenge: challenge, registry: httpsRegistry)
        } throws: { error in
            (error as? AuthError)?.code == .untrustedRealm
        }
        // A plain-HTTP registry may have a plain-HTTP realm.
        #expect(throws: Never.self) { try TokenEndpoint(challenge: challenge, registry: httpRegistry) }
    }

    /// A token goes into an `Authorization` header as it came: a token server cannot smuggle a
    /// header, or a second request, into what the proxy sends upstream.
    @Test(arguments: ["abc\r\nX-Injected: 1", "abc\ndef", "two words", "tab\there", "nul\u{0}", "caf\u{E9}"])
    func refusesTokensAHeaderCannotCarry(_ token: String) throws {
        let body = try JSONEncoder().encode(["token": token])
        #expect {
            _ = try RegistryToken.decode(body, receivedAt: .now)
        } throws: { error in
            (error as? AuthError)?.code == .invalidTokenResponse
        }
    }

    @Test func acceptsTheTokensRegistriesIssue() throws {
        for token in ["eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJjaSJ9.c2ln-_", "djE6b3JnL3JlcG86cHVsbA==", "ghp_A1b2~+/"] {
            let body = try JSONEncoder().encode(["access_token": token])
            #expect(try RegistryToken.decode(body, receivedAt: .now).value == token)
        }
    }

    @Test(arguments: ["", "/relative/token", "ftp://host/token", "https://user:pw@host/token", "not a url"])
    func refusesUnusableRealms(_ realm: String) {
        let challenge = AuthChallenge(scheme: "bearer", parameters: realm.isEmpty ? [:] : ["realm": realm])
        #expect(throws: AuthError.self) { try TokenEndpoint(challenge: challenge, registry: httpsRegistry) }
    }
}
