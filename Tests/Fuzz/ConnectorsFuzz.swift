// libFuzzer target for the connector YAML loader of OCIConnectors: Kubernetes documents
// (Connector, Secret, ConnectorBinding) as mounted from ConfigMaps and Secrets, parsed by Yams.
// Built with its sources, OCIReference and Yams by scripts/fuzz.sh.
import OCIReference

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConnectors(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    do {
        let catalog = try ConnectorCatalog.parse(yaml: text)
        for (id, connector) in catalog.connectors {
            guard connector.id == id, (try? ConnectorID(namespace: id.namespace, name: id.name)) == id else {
                fatalError("\(text): a connector filed under another name, or an invalid one")
            }
            // What is logged of a connector never holds its password.
            if let password = connector.credentials?.password, password.count >= 4,
                "\(connector)".contains(password)
            {
                fatalError("\(text): a connector's description shows its password")
            }
        }
        for binding in catalog.bindings {
            guard binding.actions.isSubset(of: ConnectorBinding.knownActions) else {
                fatalError("\(text): a binding with an unknown action")
            }
        }
    } catch {
        _ = "\(error)"
    }
    return 0
}
