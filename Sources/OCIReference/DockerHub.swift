/// Docker Hub's names: the registry *name* people write differs from the *endpoint* that serves
/// its API, and single-element repositories live in the `library` namespace.
public enum DockerHub {
    /// The canonical registry name, `docker.io`.
    public static let registryName = "docker.io"
    /// The legacy name that references may use for Docker Hub; it is normalised to ``registryName``.
    public static let legacyRegistryName = "index.docker.io"
    /// The host that serves Docker Hub's registry API.
    public static let apiEndpoint = "registry-1.docker.io"
    /// The namespace of official images.
    public static let officialNamespace = "library"

    /// The canonical registry name for `name`: Docker Hub's aliases become `docker.io`.
    public static func canonicalRegistry(_ name: String) -> String {
        name == legacyRegistryName ? registryName : name
    }

    /// The host serving the API of the registry called `name`.
    public static func endpoint(forRegistry name: String) -> String {
        name == registryName ? apiEndpoint : name
    }
}
