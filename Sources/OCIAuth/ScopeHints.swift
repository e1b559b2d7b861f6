public import OCIReference

/// The scopes a request will need, worked out before it is sent, so that the first attempt
/// carries a token good enough and no 401 round trip is needed.
public enum ScopeHints {
    /// The scopes for `method` on `route`.
    ///
    /// - GET and HEAD need `pull`; uploads and manifest PUT need `pull,push`; DELETE needs
    ///   `delete`.
    /// - A cross-repository mount (`POST …/blobs/uploads/?mount=…&from=SOURCE`) also needs `pull`
    ///   on the source repository.
    /// - The catalog needs `registry:catalog:*`; `/v2/` needs nothing.
    public static func scopes(method: String, route: RegistryRoute, mountFrom: String? = nil) -> ScopeSet {
        switch route {
        case .base:
            return .empty
        case .catalog:
            return [.catalog]
        case .repository(let name, let endpoint):
            let method = method.uppercased()
            var actions: [String]
            switch (method, endpoint) {
            case ("GET", _), ("HEAD", _):
                actions = ["pull"]
            case ("DELETE", .upload):
                actions = ["pull", "push"]  // cancelling an upload is part of pushing
            case ("DELETE", _):
                actions = ["delete"]
            default:
                actions = ["pull", "push"]
            }
            var scopes = [Scope.repository(name, actions: actions)]
            if let mountFrom, endpoint == .uploadStart, method == "POST" {
                scopes.append(.repository(mountFrom, actions: ["pull"]))
            }
            return ScopeSet(scopes)
        }
    }
}
