public import NIOCore

/// How long the proxy waits for an upstream (a registry, its token server, the storage it
/// redirects to) before it answers the client `504`, in the manner of nginx's
/// `proxy_connect_timeout` and `proxy_read_timeout`.
///
/// A request's length is not timed by these: an upload takes as long as its client sends it,
/// bounded by the client's own body timeout (``ConnectionLimits/bodyTimeout``) and by
/// ``ConnectorProxy/Configuration/requestTimeout``.
public struct UpstreamTimeouts: Sendable, Hashable {
    /// How long connecting to an upstream may take (TCP and TLS).
    public var connect: TimeAmount
    /// How long an upstream may take to start its answer once it has the whole request, the
    /// longest it may stay silent while the answer streams, and the longest it may take none of
    /// a request's body.
    public var response: TimeAmount

    /// Creates timeouts: by default 10 s to connect and 60 s to answer, as nginx's defaults
    /// (60 s each) with a shorter connect, since registries are reached over a cluster network.
    public init(connect: TimeAmount = .seconds(10), response: TimeAmount = .seconds(60)) {
        self.connect = connect
        self.response = response
    }
}

extension TimeAmount {
    /// A timeout in whole seconds (at least one), for the messages that name it.
    var wholeSecondsForMessages: Int64 {
        max(1, nanoseconds / 1_000_000_000)
    }
}
