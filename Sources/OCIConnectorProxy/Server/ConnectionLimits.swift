import CoreMetrics
public import NIOCore
import NIOHTTP1
import Synchronization

/// What one client connection may hold of the proxy before it has sent a request, and how many
/// connections it serves at once. The defaults follow nginx's and Go's servers: a request head
/// must arrive within 30 s of its first byte, an idle keep-alive connection is closed after 60 s,
/// a head may be up to 32 KiB, and up to 4096 connections are open at once.
public struct ConnectionLimits: Sendable, Hashable {
    /// How long a request head may take to arrive, from its first byte; then `408` and close.
    public var headerTimeout: TimeAmount
    /// How long a connection may wait for the next request; then it is closed.
    public var idleTimeout: TimeAmount
    /// The largest request head, request line and header fields together; larger is `431`.
    public var maxHeadBytes: Int
    /// The most client connections open at once; one more is answered `503` and closed.
    public var maxConnections: Int
    /// How long a request's body may stop arriving while the proxy waits for more of it (as
    /// nginx's `client_body_timeout`, 60 s by default); then the request is answered `408`,
    /// unless its answer has begun, and the connection closes. `nil` for no limit.
    public var bodyTimeout: TimeAmount? = .seconds(60)

    /// Creates limits.
    public init(
        headerTimeout: TimeAmount = .seconds(30), idleTimeout: TimeAmount = .seconds(60),
        maxHeadBytes: Int = 32 * 1024, maxConnections: Int = 4096
    ) {
        self.headerTimeout = headerTimeout
        self.idleTimeout = idleTimeout
        self.maxHeadBytes = maxHeadBytes
        self.maxConnections = maxConnections
    }
}

extension ConnectionLimits {
    /// NIO's HTTP/1 decoder limits with the head no larger than ``maxHeadBytes``.
    func decoderLimits(field: Int = 80 * 1024, list: Int = 80 * 1024, count: Int = 1000) -> NIOHTTPDecoderLimitConfiguration {
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderFieldSize = min(field, maxHeadBytes)
        limits.maxHeaderListSize = min(list, maxHeadBytes)
        limits.maxHeaderFieldCount = count
        return limits
    }
}

/// The client connections open now, shared by every connection of one proxy.
final class ConnectionCounter: Sendable {
    private let open = Atomic<Int>(0)
    let maximum: Int
    /// `oci_connector_connections`: the client connections open now.
    private let gauge = Meter(label: "oci_connector_connections")

    init(maximum: Int) {
        self.maximum = maximum
    }

    /// Counts a new connection in if there is room for it.
    func admit() -> Bool {
        let (_, now) = open.wrappingAdd(1, ordering: .relaxed)
        guard now > maximum else {
            gauge.increment()
            return true
        }
        open.wrappingSubtract(1, ordering: .relaxed)
        return false
    }

    /// Counts an admitted connection out.
    func release() {
        open.wrappingSubtract(1, ordering: .relaxed)
        gauge.decrement()
    }

    var current: Int { open.load(ordering: .relaxed) }
}

/// Why a request was given up on before its body was whole, and what its client is answered
/// when its answer has not begun.
protocol RequestAbandonment: Error, Sendable {
    var refusal: RegistryErrorResponse { get }
}

/// A request's body stopped arriving for longer than ``ConnectionLimits/bodyTimeout``.
struct RequestBodyTimeout: RequestAbandonment, CustomStringConvertible {
    let timeout: TimeAmount

    var description: String { "the request body stopped arriving for \(timeout.wholeSecondsForMessages) s" }

    /// What the client is answered, when its answer has not begun.
    var refusal: RegistryErrorResponse {
        RegistryErrorResponse(.requestTimeout, "UNAVAILABLE", description + "; the request was abandoned")
    }
}

/// The upstream took none of a request's body for longer than
/// ``UpstreamTimeouts/response``: its connection is stuck, and the client, held back by the
/// proxy meanwhile, would otherwise wait for the request timeout.
struct UpstreamBodyStall: RequestAbandonment, CustomStringConvertible {
    let timeout: TimeAmount

    var description: String { "the registry took none of the request body for \(timeout.wholeSecondsForMessages) s" }

    var refusal: RegistryErrorResponse {
        RegistryErrorResponse(.gatewayTimeout, "UNAVAILABLE", description + "; the request was abandoned")
    }
}
