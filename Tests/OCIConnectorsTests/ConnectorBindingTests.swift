import OCIConnectors
import OCIReference
import Testing

@Suite("ConnectorBinding: who may use which connector")
struct ConnectorBindingTests {
    static let example = """
        apiVersion: oci-connector.dev/v1alpha1
        kind: ConnectorBinding
        metadata: {name: ci-push, namespace: team-a}
        spec:
          connectors: [harbor]
          subjects:
            - {kind: ServiceAccount, name: builder}
            - {kind: ServiceAccount, name: deployer, namespace: team-b}
            - {kind: Group, name: "system:serviceaccounts:team-c"}
          actions: [pull, push]
          repositories: ["team/*"]
        ---
        apiVersion: oci-connector.dev/v1alpha1
        kind: ConnectorBinding
        metadata: {name: everyone-pulls, namespace: team-a}
        spec:
          connectors: [harbor, mirror]
          subjects: [{kind: Group, name: "system:serviceaccounts"}]
          actions: [pull]
        ---
        apiVersion: other.example.com/v1
        kind: ConnectorBinding
        metadata: {name: not-ours, namespace: team-a}
        spec: {anything: goes}
        """

    static func serviceAccount(_ namespace: String, _ name: String) -> (user: String, groups: [String]) {
        (
            "system:serviceaccount:\(namespace):\(name)",
            ["system:serviceaccounts", "system:serviceaccounts:\(namespace)", "system:authenticated"]
        )
    }

    @Test func readsBindingsAndSkipsOtherProjectsKinds() throws {
        let catalog = try ConnectorCatalog.parse(yaml: Self.example)
        #expect(catalog.bindings.map(\.name) == ["ci-push", "everyone-pulls"])
        let binding = catalog.bindings[0]
        #expect(binding.connectors == ["harbor"])
        #expect(binding.actions == ["pull", "push"])
        #expect(binding.repositories == ["team/*"])
        #expect(
            binding.subjects == [
                .serviceAccount(namespace: "team-a", name: "builder"), .serviceAccount(namespace: "team-b", name: "deployer"),
                .group("system:serviceaccounts:team-c"),
            ])
    }

    /// (service account, connector, action, repository, allowed by some binding)
    static let decisions: [(String, String, String, String, String?, Bool)] = [
        ("team-a", "builder", "team-a/harbor", "push", "team/app", true),
        ("team-a", "builder", "team-a/harbor", "pull", "team/app", true),
        ("team-a", "builder", "team-a/harbor", "delete", "team/app", false),  // not granted
        ("team-a", "builder", "team-a/harbor", "push", "team/app/cache", false),  // * stays in one element
        ("team-a", "builder", "team-a/harbor", "push", "other/app", false),  // outside the pattern
        ("team-a", "builder", "team-a/harbor", "pull", "other/app", true),  // everyone pulls
        ("team-a", "builder", "team-a/mirror", "push", "team/app", false),  // pull only there
        ("team-b", "deployer", "team-a/harbor", "push", "team/app", true),  // named with its namespace
        ("team-b", "builder", "team-a/harbor", "push", "team/app", false),  // same name, other namespace
        ("team-c", "anyone", "team-a/harbor", "push", "team/x", true),  // by group
        ("team-d", "anyone", "team-a/harbor", "push", "team/x", false),
        ("team-d", "anyone", "team-a/mirror", "pull", "library/alpine", true),
        ("team-a", "builder", "team-b/harbor", "pull", "team/app", false),  // another namespace's connector
    ]

    @Test(arguments: decisions) func grantsWhatTheBindingsSay(
        namespace: String, name: String, connector: String, action: String, repository: String?, allowed: Bool
    ) throws {
        let catalog = try ConnectorCatalog.parse(yaml: Self.example)
        let account = Self.serviceAccount(namespace, name)
        let bindings = catalog.bindings(forUser: account.user, groups: account.groups)
        let id = try ConnectorID(parsing: connector)
        #expect(bindings.contains { $0.allows(connector: id, action: action, repository: repository) } == allowed)
    }

    @Test(arguments: [
        ("spec: {subjects: [{kind: Group, name: g}], actions: [pull]}", "spec.connectors"),
        ("spec: {connectors: [c], actions: [pull]}", "spec.subjects"),
        ("spec: {connectors: [c], subjects: [{kind: Role, name: r}], actions: [pull]}", "spec.subjects[0].kind"),
        ("spec: {connectors: [c], subjects: [{kind: ServiceAccount}], actions: [pull]}", "spec.subjects[0].name"),
        ("spec: {connectors: [c], subjects: [{kind: Group, name: g}], actions: [pull, admin]}", "spec.actions"),
        ("spec: {connectors: [c], subjects: [{kind: Group, name: g}]}", "spec.actions"),
        ("spec: {connectors: [c], subjects: [{kind: Group, name: g}], actions: [pull], repositories: []}", "spec.repositories"),
        ("spec: {connectors: [Not_A_Name], subjects: [{kind: Group, name: g}], actions: [pull]}", "spec.connectors"),
    ])
    func refusesMalformedBindings(spec: String, field: String) {
        let yaml = "kind: ConnectorBinding\nmetadata: {name: b, namespace: ns}\n" + spec
        #expect {
            try ConnectorCatalog.parse(yaml: yaml)
        } throws: { error in
            (error as? ConnectorConfigError)?.field == field
        }
    }

    @Test func refusesABindingDefinedTwice() {
        let one =
            "kind: ConnectorBinding\nmetadata: {name: b, namespace: ns}\nspec: {connectors: [c], subjects: [{kind: Group, name: g}], actions: [pull]}"
        #expect(throws: ConnectorConfigError.self) { try ConnectorCatalog.parse(yaml: one + "\n---\n" + one) }
    }
}
