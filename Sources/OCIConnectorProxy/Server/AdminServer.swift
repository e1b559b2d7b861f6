public import NIOCore
import NIOHTTP1
import NIOPosix

/// A listener of its own for the people and systems that run the proxy, off the data port:
/// probes and metrics need no proxy token, and the data port serves nothing but the registry
/// API.
///
/// - `GET /healthz`: `200 ok` while the process serves (Kubernetes' liveness probe).
/// - `GET /readyz`: `200 ready` when ``Endpoints/notReady`` says nothing, `503` with its reason
///   otherwise (loading, draining): Kubernetes' readiness probe, which takes a replica out of
///   its Service while it drains.
/// - `GET /metrics`: what ``Endpoints/metrics`` renders, in the Prometheus text format.
///
/// `HEAD` works as `GET` without the body; other methods get `405`, other paths `404`.
public final class AdminServer: Sendable {
    /// What the listener answers with.
    public struct Endpoints: Sendable {
        /// Why the proxy is not ready to take traffic, or `nil` when it is.
        public var notReady: @Sendable () -> String?
        /// The metrics, in the Prometheus text exposition format.
        public var metrics: @Sendable () -> String

        /// Creates the endpoints.
        public init(notReady: @escaping @Sendable () -> String?, metrics: @escaping @Sendable () -> String) {
            self.notReady = notReady
            self.metrics = metrics
        }
    }

    private let channel: any Channel

    /// The address the listener is bound to (with the port picked when asked for port 0).
    public var localAddress: SocketAddress? { channel.localAddress }

    private init(channel: any Channel) {
        self.channel = channel
    }

    /// Listens on `host`:`port` (0 picks a free port).
    public static func bind(
        host: String, port: Int, endpoints: Endpoints, group: (any EventLoopGroup)? = nil
    ) async throws -> AdminServer {
        let channel = try await ServerBootstrap(group: group ?? MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(AdminHandler(endpoints: endpoints))
                }
            }
            .bind(host: host, port: port).get()
        return AdminServer(channel: channel)
    }

    /// Stops listening; connections open close as their clients leave.
    public func close() async {
        try? await channel.close()
    }
}

/// Answers one admin request after another on a connection.
final class AdminHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let endpoints: AdminServer.Endpoints
    private var head: HTTPRequestHead?

    init(endpoints: AdminServer.Endpoints) {
        self.endpoints = endpoints
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): self.head = head
        case .body: break
        case .end:
            guard let head else { return }
            self.head = nil
            let (status, contentType, body) = answer(head)
            var headers = HTTPHeaders([("Content-Type", contentType), ("Content-Length", "\(body.utf8.count)")])
            if !head.isKeepAlive { headers.add(name: "Connection", value: "close") }
            if status == .methodNotAllowed { headers.add(name: "Allow", value: "GET, HEAD") }
            context.write(
                wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
            if head.method != .HEAD {
                context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
            }
            let written = context.writeAndFlush(wrapOutboundOut(.end(nil)))
            if !head.isKeepAlive { written.assumeIsolated().whenComplete { _ in context.close(promise: nil) } }
        }
    }

    /// The status, content type and body for `head`.
    func answer(_ head: HTTPRequestHead) -> (HTTPResponseStatus, String, String) {
        let text = "text/plain; charset=utf-8"
        let path = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        guard ["/healthz", "/readyz", "/metrics"].contains(path) else { return (.notFound, text, "not found\n") }
        guard head.method == .GET || head.method == .HEAD else { return (.methodNotAllowed, text, "method not allowed\n") }
        switch path {
        case "/healthz":
            return (.ok, text, "ok\n")
        case "/readyz":
            if let reason = endpoints.notReady() { return (.serviceUnavailable, text, "not ready: \(reason)\n") }
            return (.ok, text, "ready\n")
        default:
            return (.ok, "text/plain; version=0.0.4; charset=utf-8", endpoints.metrics())
        }
    }
}
