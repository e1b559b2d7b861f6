public import NIOCore
import NIOExtras
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization

extension ConnectorProxy: ExchangeStarter {
    /// Adds the proxy's handlers to a new client connection's pipeline, on its event loop: the
    /// connection guard (admission, time limits), NIO's HTTP/1 codec, the connection's
    /// persistence rules, its receive buffers, and the ``ClientConnectionHandler`` that answers
    /// each request. For a channel of your own (behind TLS, say); ``ProxyServer`` uses it.
    public func configureConnection(_ channel: any Channel) throws {
        let operations = channel.pipeline.syncOperations
        // First of all: admits the connection and times out those that send no request.
        try operations.addHandler(ConnectionGuard(limits: configuration.connections, counter: connections))
        // Pipelining and decoder errors are the proxy's own (``ClientConnectionState``,
        // ``ConnectionPersistenceHandler``). Every header written comes from the proxy or from a
        // head NIO's decoder accepted, so it is not validated again.
        try operations.configureHTTPServerPipeline(
            withPipeliningAssistance: false, withErrorHandling: false, withOutboundHeaderValidation: false,
            withEncoderConfiguration: .init(), withDecoderLimitConfiguration: configuration.connections.decoderLimits())
        // Behind TLS (``ProxyServer``'s listener, or an embedder's own), the proxy's locations are `https://`.
        let secure = (try? operations.handler(type: NIOSSLServerHandler.self)) != nil
        try operations.addHandlers([
            ConnectionPersistenceHandler(), ReceiveBufferHandler(),
            ClientConnectionHandler(starter: self, secure: secure, bodyTimeout: configuration.connections.bodyTimeout),
        ])
    }

    func startExchange(for head: HTTPRequestHead, on connection: ClientConnectionHandler) -> (any ClientExchange)? {
        startExchange(for: head, on: connection, log: nil)
    }

    /// Decides `head` and starts what answers it; `log` is its log when it is decided again.
    func startExchange(for head: HTTPRequestHead, on connection: ClientConnectionHandler, log: RequestLog?)
        -> (any ClientExchange)?
    {
        switch decide(
            head, client: connection.clientAddress, secure: connection.isSecure, lastVerified: &connection.lastVerified,
            log: log)
        {
        case .answer(let answer):
            connection.writeAnswer(answer, method: head.method)
            return nil
        case .read(let plan):
            let relay = ReadRelay(plan: plan, connection: connection)
            relay.start()
            return relay
        case .forward(let plan):
            let exchange = ForwardExchange(
                plan: plan, connection: connection, stallTimeout: configuration.upstreamTimeouts.response)
            exchange.start { [self] plan, body in try await forward(plan, body: body) }
            return exchange
        case .filteredCatalog(let plan, let claims):
            let exchange = ForwardExchange(
                plan: plan, connection: connection, stallTimeout: configuration.upstreamTimeouts.response)
            exchange.start { [self] plan, _ in try await filteredCatalog(plan, claims: claims) }
            return exchange
        case .issueToken(let query, let log, let signer):
            let exchange = TokenExchange(head: head, query: query, log: log, connection: connection, proxy: self, signer: signer)
            exchange.start()
            return exchange
        case .verifyFirst(let pending, let log):
            let exchange = VerifyingExchange(head: head, log: log, connection: connection, starter: self)
            exchange.start(pending)
            return exchange
        }
    }
}

/// A listening socket serving a ``ConnectorProxy`` over HTTP/1.1.
///
/// ``shutdownGracefully()`` stops accepting connections, closes idle ones, lets every answer
/// under way finish (closing its connection after it), and returns when all are closed.
public final class ProxyServer: Sendable {
    private let channel: any Channel
    private let quiescing: ServerQuiescingHelper
    private let draining = Atomic<Bool>(false)

    /// Whether ``shutdownGracefully()`` has begun: the server takes no new connections.
    public var isDraining: Bool { draining.load(ordering: .relaxed) }

    /// The address the server listens on (with the port picked when asked for port 0).
    public var localAddress: SocketAddress? { channel.localAddress }

    private init(channel: any Channel, quiescing: ServerQuiescingHelper) {
        self.channel = channel
        self.quiescing = quiescing
    }

    /// Listens on `host`:`port` (0 picks a free port) for `proxy`, on `group`'s event loops
    /// (NIO's shared ones by default); over TLS with `tls`'s certificate, which each new
    /// connection takes as it is then (see ``ListenerTLS``).
    public static func bind(
        _ proxy: ConnectorProxy, host: String, port: Int, tls: ListenerTLS? = nil, group: (any EventLoopGroup)? = nil
    ) async throws -> ProxyServer {
        let group = group ?? MultiThreadedEventLoopGroup.singleton
        let quiescing = ServerQuiescingHelper(group: group)
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiescing.makeServerChannelHandler(channel: channel))
                }
            }
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls.context())) }
                    try proxy.configureConnection(channel)
                }
            }
            .bind(host: host, port: port).get()
        return ProxyServer(channel: channel, quiescing: quiescing)
    }

    /// Stops accepting connections and waits until every open one has finished its answer and closed.
    public func shutdownGracefully() async {
        draining.store(true, ordering: .relaxed)
        let done = channel.eventLoop.makePromise(of: Void.self)
        quiescing.initiateShutdown(promise: done)
        try? await done.futureResult.get()
    }

    /// Waits until the server has stopped listening.
    public func closed() async {
        try? await channel.closeFuture.get()
    }
}
