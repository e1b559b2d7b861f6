import NIOSSL
import OCIReference
import Synchronization

/// Readers for the origins an upstream redirects blob reads to (object storage: S3, GCS, a CDN),
/// one per origin, so those reads are relayed on the event loop like the upstream's own (a
/// general HTTP client cost about four times the CPU per GiB; Performance.md).
///
/// Requests to these origins never carry the connector's credentials: the signed URL is the
/// authorization. An upstream sends its blobs to a handful of origins; past ``maximumOrigins``
/// a redirect is answered 502.
final class StorageFetchers: Sendable {
    /// Distinct origins kept per registry (shared by the connectors that lead to it).
    static let maximumOrigins = 8

    private let tls: SharedTLSContext
    private let timeouts: UpstreamTimeouts
    private let fetchers = Mutex<[String: RegistryReader]>([:])

    /// Fetchers speaking TLS to `https` origins with the registry's own context (`tls`), so they
    /// trust what its upstream connections trust (for an https registry, that context is built
    /// already; otherwise at the first redirect to an https origin).
    init(tls: SharedTLSContext, timeouts: UpstreamTimeouts = .init()) {
        self.tls = tls
        self.timeouts = timeouts
    }

    /// The fetcher for `location`'s origin and the request target on it; `nil` for a location
    /// this cannot take (not an absolute `http`/`https` URL, user information in it, too many
    /// origins already, or no TLS context to be had).
    ///
    /// Each origin's idle connections, all of which carried blobs, keep up to 8 receive buffers
    /// of up to 1 MiB (``RegistryReader/Configuration/idleConnectionsWithLargeBuffers``).
    func fetcher(for location: String) -> (fetcher: RegistryReader, target: String)? {
        guard let target = StorageLocation(location) else { return nil }
        return fetchers.withLock { fetchers -> (RegistryReader, String)? in
            if let fetcher = fetchers[target.origin] { return (fetcher, target.pathAndQuery) }
            guard fetchers.count < Self.maximumOrigins else { return nil }
            var context: NIOSSLContext?
            if target.isSecure {
                guard let built = try? tls.context() else { return nil }
                context = built
            }
            let fetcher = RegistryReader(
                host: target.host, port: target.port, hostHeader: target.authority,
                sslContext: context,
                configuration: .init(connectTimeout: timeouts.connect, readTimeout: timeouts.response, idleConnections: 8))
            fetchers[target.origin] = fetcher
            return (fetcher, target.pathAndQuery)
        }
    }

    /// Closes every fetcher's connections.
    func shutdown() async {
        for fetcher in fetchers.withLock({ Array($0.values) }) {
            await fetcher.shutdown()
        }
    }
}

/// An absolute `http` or `https` URL taken apart for a ``RegistryReader``.
struct StorageLocation: Equatable {
    let isSecure: Bool
    /// `host[:port]` as the URL writes it: the `Host` header.
    let authority: String
    /// The host to connect to (an IPv6 address without its brackets).
    let host: String
    let port: Int
    let pathAndQuery: String

    /// `scheme://authority` as the URL writes it: what connections are shared by. Two spellings
    /// of one origin get two fetchers, so that each request carries the `Host` it was signed for.
    var origin: String { "\(isSecure ? "https" : "http")://\(authority)" }

    init?(_ url: String) {
        let lowercased = url.prefix(8).lowercased()
        let secure: Bool
        if lowercased.hasPrefix("https://") {
            secure = true
        } else if lowercased.hasPrefix("http://") {
            secure = false
        } else {
            return nil
        }
        let rest = url.dropFirst(secure ? 8 : 7)
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) ?? rest.endIndex
        let authority = String(rest[..<authorityEnd])
        var target = String(rest[authorityEnd...])
        if let fragment = target.firstIndex(of: "#") { target = String(target[..<fragment]) }
        if !target.hasPrefix("/") { target = "/" + target }
        // What goes on the request line as it is: printable ASCII only (a signed URL is already
        // percent-encoded). Anything else is not followed.
        guard !authority.isEmpty, !authority.contains("@"), Self.isRequestTarget(target) else { return nil }
        var host = Substring(authority)
        var port = secure ? 443 : 80
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { return nil }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":"), let parsed = Self.port(after.dropFirst(), default: port) else { return nil }
                port = parsed
            }
        } else if let colon = authority.firstIndex(of: ":") {
            guard let parsed = Self.port(authority[authority.index(after: colon)...], default: port) else { return nil }
            host = authority[..<colon]
            port = parsed
        }
        // The same host rule as a connector's own address.
        guard !host.isEmpty, RegistryAddress.isValidHost(authority.hasPrefix("[") ? "[\(host)]" : String(host)),
            (1...65535).contains(port)
        else { return nil }
        self.isSecure = secure
        self.authority = authority
        self.host = String(host)
        self.port = port
        self.pathAndQuery = target
    }

    /// Whether `target` can go on a request line as it is: an absolute path of printable ASCII
    /// (a signed URL is already percent-encoded).
    static func isRequestTarget(_ target: String) -> Bool {
        target.hasPrefix("/") && target.utf8.allSatisfy { (0x21...0x7E).contains($0) }
    }

    /// A URL's port: digits only; empty means the scheme's default.
    private static func port(_ text: Substring, default defaultPort: Int) -> Int? {
        if text.isEmpty { return defaultPort }
        guard text.utf8.allSatisfy({ (0x30...0x39).contains($0) }) else { return nil }
        return Int(text)
    }
}
