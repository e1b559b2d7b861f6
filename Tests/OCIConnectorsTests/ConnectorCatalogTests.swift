import Foundation
import OCIConnectors
import OCIReference
import Testing

@Suite("Loading connectors from Kubernetes YAML")
struct ConnectorCatalogTests {
    static let referenceExample = """
        apiVersion: connectors.alauda.io/v1alpha1
        kind: Connector
        metadata: {name: harbor, namespace: team-a}
        spec:
          connectorClassName: oci
          address: https://harbor.example.com
          auth:
            name: tokenAuth
            secretRef: {name: harbor-secret}
            params: [{name: repository, value: team/app}]
        ---
        apiVersion: v1
        kind: Secret
        metadata: {name: harbor-secret, namespace: team-a}
        type: cpaas.io/distribution-registry-token
        stringData: {username: robot$ci, password: s3cret}
        """

    @Test func readsTheReferenceSystemsFilesUnchanged() throws {
        let catalog = try ConnectorCatalog.parse(yaml: Self.referenceExample)
        let connector = try catalog.connector(ConnectorID(parsing: "team-a/harbor"))
        #expect(connector.address.baseURL == "https://harbor.example.com")
        #expect(connector.credentials == RegistryCredentials(username: "robot$ci", password: "s3cret"))
        #expect(connector.healthCheckRepository == "team/app")
        #expect(connector.authName == "tokenAuth")
    }

    @Test func anonymousConnectorInTheDefaultNamespace() throws {
        let catalog = try ConnectorCatalog.parse(
            yaml: """
                kind: Connector
                metadata: {name: public}
                spec: {address: "http://127.0.0.1:5000"}
                unknownTopLevel: ignored
                """)
        let connector = try catalog.connector(ConnectorID(parsing: "default/public"))
        #expect(connector.credentials == nil)
        #expect(connector.address.scheme == .http)
    }

    @Test func secretsWithBase64DataAndBasicAuthType() throws {
        let catalog = try ConnectorCatalog.parse(
            yaml: """
                kind: Connector
                metadata: {name: c, namespace: ns}
                spec: {address: https://r.example.com, auth: {secretRef: {name: s}}}
                ---
                kind: Secret
                metadata: {name: s, namespace: ns}
                type: kubernetes.io/basic-auth
                data: {username: \(Data("user".utf8).base64EncodedString()), password: \(Data("p@ss:word".utf8).base64EncodedString())}
                stringData: {username: override}
                """)
        let credentials = try catalog.connector(ConnectorID(parsing: "ns/c")).credentials
        #expect(credentials == RegistryCredentials(username: "override", password: "p@ss:word"))
    }

    @Test func dockerConfigJSONSecretsPickTheConnectorsRegistry() throws {
        let config =
            #"{"auths":{"https://index.docker.io/v1/":{"auth":"\#(Data("hub:hubpw".utf8).base64EncodedString())"},"harbor.example.com":{"username":"robot","password":"pw"}}}"#
        let yaml = """
            kind: List
            items:
            - kind: Connector
              metadata: {name: harbor, namespace: ns}
              spec: {address: https://harbor.example.com, auth: {secretRef: {name: pull}}}
            - kind: Connector
              metadata: {name: hub, namespace: ns}
              spec: {address: https://index.docker.io, auth: {secretRef: {name: pull}}}
            - kind: Secret
              metadata: {name: pull, namespace: ns}
              type: kubernetes.io/dockerconfigjson
              data: {.dockerconfigjson: \(Data(config.utf8).base64EncodedString())}
            """
        let catalog = try ConnectorCatalog.parse(yaml: yaml)
        #expect(
            try catalog.connector(ConnectorID(parsing: "ns/harbor")).credentials
                == RegistryCredentials(username: "robot", password: "pw"))
        #expect(
            try catalog.connector(ConnectorID(parsing: "ns/hub")).credentials
                == RegistryCredentials(username: "hub", password: "hubpw"))
    }

    @Test func numericLookingPasswordsStayStrings() throws {
        let catalog = try ConnectorCatalog.parse(
            yaml: """
                kind: Connector
                metadata: {name: c}
                spec: {address: https://r.example.com, auth: {secretRef: {name: s}}}
                ---
                kind: Secret
                metadata: {name: s}
                stringData: {username: "007", password: 0123}
                """)
        #expect(
            try catalog.connector(ConnectorID(parsing: "c")).credentials == RegistryCredentials(username: "007", password: "0123")
        )
    }

    static let broken: [(String, String, String)] = [
        ("kind: Connector\nmetadata: {name: c}\nspec: {}", "spec.address", "is required"),
        ("kind: Connector\nmetadata: {namespace: x}\nspec: {address: https://r}", "metadata.name", "is required"),
        ("kind: Connector\nmetadata: {name: c}\nspec: {address: 'ftp://r'}", "spec.address", "http or https"),
        ("kind: Connector\nmetadata: {name: C_}\nspec: {address: https://r}", "metadata", "connector name"),
        (
            "kind: Connector\nmetadata: {name: c}\nspec: {address: https://r, auth: {secretRef: {name: missing}}}",
            "spec.auth.secretRef", "default/missing"
        ),
        (
            "kind: Connector\nmetadata: {name: c}\nspec: {address: https://r, auth: {secretRef: {name: s}}}\n---\nkind: Secret\nmetadata: {name: s}\nstringData: {username: u}",
            "stringData.password", "is required (in stringData or data)"
        ),
        ("kind: Secret\nmetadata: {name: s}\ntype: kubernetes.io/tls\nstringData: {a: b}", "type", "not supported"),
        ("kind: Secret\nmetadata: {name: s}\ndata: {password: '!!!notbase64'}", "data.password", "base64"),
        (
            "kind: Connector\nmetadata: {name: c}\nspec: {address: https://r, auth: {params: {repository: x}}}",
            "spec.auth.params", "list"
        ),
    ]

    @Test(arguments: broken)
    func errorsNameTheFileDocumentAndField(_ yaml: String, _ field: String, _ reason: String) {
        do {
            _ = try ConnectorCatalog.parse(yaml: "kind: ConfigMap\nmetadata: {name: first}\n---\n" + yaml, file: "conn.yaml")
            Issue.record("accepted broken input")
        } catch {
            #expect(error.file == "conn.yaml")
            // The document at fault: the Secret for a Secret's field, else the first one after the ConfigMap.
            let expected =
                field.hasPrefix("stringData") || field.hasPrefix("data") || field == "type"
                ? yaml.components(separatedBy: "---").count + 1 : 2
            #expect(error.document == expected)
            #expect(error.field == field)
            #expect(error.reason.contains(reason), "\(error)")
            #expect(error.description.hasPrefix("conn.yaml, document \(expected), field \(field): "))
        }
    }

    @Test func errorsNeverQuoteSecretValues() {
        do {
            _ = try ConnectorCatalog.parse(
                yaml: """
                    kind: Secret
                    metadata: {name: s}
                    stringData:
                      password: hunter2-canary: x
                    """)
            Issue.record("accepted malformed YAML")
        } catch {
            #expect(!error.description.contains("hunter2-canary"))
        }
    }

    @Test func loadsADirectoryInNameOrder() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("connectors-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try Self.referenceExample.write(to: directory.appendingPathComponent("a.yaml"), atomically: true, encoding: .utf8)
        try "kind: Connector\nmetadata: {name: other, namespace: team-b}\nspec: {address: http://localhost:5000}\n"
            .write(to: directory.appendingPathComponent("b.yml"), atomically: true, encoding: .utf8)
        try "not: [yaml".write(to: directory.appendingPathComponent("notes.txt"), atomically: true, encoding: .utf8)
        let catalog = try ConnectorCatalog.load(from: [directory.path])
        #expect(catalog.connectors.keys.map(\.description).sorted() == ["team-a/harbor", "team-b/other"])

        #expect(throws: ConnectorConfigError.self) {
            try ConnectorCatalog.load(from: [directory.appendingPathComponent("nope").path])
        }
        #expect(throws: ConnectorConfigError.self) { try catalog.connector(ConnectorID(parsing: "team-c/x")) }
    }

    @Test func credentialsAreRedacted() {
        let credentials = RegistryCredentials(username: "robot", password: "hunter2")
        #expect(!"\(credentials)".contains("hunter2"))
        #expect(!String(reflecting: credentials).contains("hunter2"))
        #expect(credentials.basicAuthorization == "Basic " + Data("robot:hunter2".utf8).base64EncodedString())
    }

    @Test(arguments: ["", "f", "fo", "foo", "foob", "fooba", "foobar", "robot$ci:s3cr€t"])
    func base64RoundTrips(_ text: String) {
        let encoded = Base64.encode(Array(text.utf8))
        #expect(encoded == Data(text.utf8).base64EncodedString())
        #expect(Base64.decode(encoded) == Array(text.utf8))
    }
}
