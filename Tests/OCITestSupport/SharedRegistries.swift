import Foundation

/// The three registries most tests share, started once per test run on first use:
/// anonymous, htpasswd Basic, and token auth with its issuer.
public actor SharedRegistries {
    public static let shared = SharedRegistries()

    /// htpasswd and token users.
    public static let basicUser = ("alice", "alice-secret")
    public static let robotUser = ("robot$ci", "s3cret-robot")
    public static let readerUser = ("reader", "reader-secret")

    private var anonymousRegistry: Task<TestRegistry, any Error>?
    private var basicRegistry: Task<TestRegistry, any Error>?
    private var tokenSetup: Task<(TestRegistry, TokenIssuer), any Error>?

    public func anonymous() async throws -> TestRegistry {
        let task = anonymousRegistry ?? Task { try await TestRegistry.start(.anonymous) }
        anonymousRegistry = task
        return try await task.value
    }

    public func basic() async throws -> TestRegistry {
        let task =
            basicRegistry
            ?? Task {
                try await TestRegistry.start(.htpasswd([Self.basicUser.0: Self.basicUser.1]))
            }
        basicRegistry = task
        return try await task.value
    }

    /// The token-auth registry and its issuer (shared: do not count its requests; start a
    /// private pair with ``TokenAuthRegistry/start(expiresIn:acceptPost:)`` for that).
    public func token() async throws -> (registry: TestRegistry, issuer: TokenIssuer) {
        let task = tokenSetup ?? Task { try await TokenAuthRegistry.start() }
        tokenSetup = task
        return try await task.value
    }
}

/// A token-auth registry with an issuer of its own.
public enum TokenAuthRegistry {
    /// The users every issuer knows: a robot that may do anything, and a reader that may pull.
    public static var users: [String: TokenIssuer.User] {
        [
            SharedRegistries.robotUser.0: .init(password: SharedRegistries.robotUser.1),
            SharedRegistries.readerUser.0: .init(password: SharedRegistries.readerUser.1, policy: ["*": ["pull"]]),
        ]
    }

    public static func start(expiresIn: Int = 300, acceptPost: Bool = true) async throws -> (TestRegistry, TokenIssuer) {
        let issuer = try await TokenIssuer.start(users: users, expiresIn: expiresIn, acceptPost: acceptPost)
        let registry = try await TestRegistry.start(.token(issuer))
        return (registry, issuer)
    }
}

/// Writes Connector and Secret YAML for tests, as users write it.
public enum ConnectorYAML {
    public static func connector(
        name: String, namespace: String = "team-a", address: String, username: String? = nil, password: String? = nil,
        repository: String? = nil, extraParams: [String: String] = [:]
    ) -> String {
        var params = extraParams
        if let repository { params["repository"] = repository }
        var auth = ""
        if username != nil || !params.isEmpty {
            auth = "  auth:\n    name: tokenAuth\n"
            if username != nil { auth += "    secretRef:\n      name: \(name)-secret\n" }
            if !params.isEmpty {
                auth +=
                    "    params:\n"
                    + params.sorted(by: { $0.key < $1.key })
                    .map { "      - name: \($0.key)\n        value: \"\($0.value)\"\n" }.joined()
            }
        }
        var text = """
            apiVersion: connectors.alauda.io/v1alpha1
            kind: Connector
            metadata:
              name: \(name)
              namespace: \(namespace)
            spec:
              connectorClassName: oci
              address: \(address)

            """ + auth
        if let password { SecretEvidence.record(password) }
        if let username, let password {
            text += """
                ---
                apiVersion: v1
                kind: Secret
                metadata:
                  name: \(name)-secret
                  namespace: \(namespace)
                type: cpaas.io/distribution-registry-token
                stringData:
                  username: '\(username)'
                  password: '\(password)'

                """
        }
        return text
    }
}
