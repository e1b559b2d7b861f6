import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization

/// Reads manifests, blobs, tag lists and referrers from one upstream origin (a registry, or the
/// object storage it redirects blob reads to) over HTTP/1.1 connections of its own: the client
/// behind every read the proxy relays (``ReadRelay``).
///
/// A general HTTP client reads at most 64 KiB per system call and stops reading whenever one
/// buffer waits for its consumer; for a blob that is the largest cost of forwarding it. This
/// client reads up to ``Configuration/maximumReadSize`` at a time and keeps up to
/// ``Configuration/bufferedReads`` reads ahead of the consumer, then stops reading until the
/// consumer catches up: memory per stream stays bounded, and the connection to the client is
/// written while the next read is already under way.
///
/// Connections are kept alive and reused (last used first). A request that fails on a reused
/// connection before any response arrives (the upstream closed it while it sat idle) is sent
/// once more on a new connection; GETs can be repeated.
final class RegistryReader: Sendable {
    /// Connection and buffering settings.
    struct Configuration: Sendable {
        /// TLS settings for an `https` origin; `nil` connects in plain text.
        var tls: TLSConfiguration?
        /// How long connecting may take.
        var connectTimeout: TimeAmount
        /// How long the upstream may stay silent while a response is awaited or read.
        var readTimeout: TimeAmount
        /// The largest buffer one read fills.
        var maximumReadSize: Int
        /// How many reads may wait for the consumer before reading stops.
        var bufferedReads: Int
        /// How many idle connections are kept for reuse.
        var idleConnections: Int
        /// How many of the idle connections may be ones whose receive buffer a blob read grew
        /// to 256 KiB or more. Such a buffer stays with its connection
        /// until the connection closes, up to ``maximumReadSize`` each: without this bound, 64
        /// concurrent blob reads left 64 MiB held by idle connections until their idle timeout.
        /// Past it, a connection closes when its response ends; connections that only carried
        /// small bodies (manifests, `HEAD`s) are not counted.
        var idleConnectionsWithLargeBuffers: Int
        /// How long a connection may stay idle before it is closed. An idle connection keeps a
        /// receive buffer (up to ``maximumReadSize``), so a pool of many holds memory until then.
        var idleTimeout: TimeAmount

        /// Settings for a plain-text origin by default: 10 s to connect, 60 s of silence at most,
        /// reads of up to 1 MiB, four of them buffered, eight idle connections (all eight may
        /// hold large buffers) for 30 s at most.
        ///
        /// A stream holds at most five reads: four waiting and one being written; a connection
        /// also keeps one receive buffer for its next read, idle or not. Reads of 1 MiB
        /// halve the CPU a forwarded GiB costs compared with 256 KiB (Documentation/Performance.md);
        /// the adaptive allocator only grows a connection's buffers when the upstream fills them.
        init(
            tls: TLSConfiguration? = nil, connectTimeout: TimeAmount = .seconds(10), readTimeout: TimeAmount = .seconds(60),
            maximumReadSize: Int = 1024 * 1024, bufferedReads: Int = 4, idleConnections: Int = 8,
            idleConnectionsWithLargeBuffers: Int = 8, idleTimeout: TimeAmount = .seconds(30)
        ) {
            self.tls = tls
            self.connectTimeout = connectTimeout
            self.readTimeout = readTimeout
            self.maximumReadSize = maximumReadSize
            self.bufferedReads = bufferedReads
            self.idleConnections = idleConnections
            self.idleConnectionsWithLargeBuffers = idleConnectionsWithLargeBuffers
            self.idleTimeout = idleTimeout
        }
    }

    /// The host connected to.
    let host: String
    /// The port connected to.
    let port: Int
    /// The `Host` its requests carry.
    let hostHeader: String
    private let configuration: Configuration
    private let sslContext: NIOSSLContext?
    private let group: any EventLoopGroup
    private let pool: ConnectionPool
    private let opened = Atomic<Int>(0)

    /// Connections opened so far.
    var connectionsOpened: Int { opened.load(ordering: .relaxed) }
    /// Connections waiting for reuse.
    var idleConnections: Int { pool.count }
    /// Connections the pool holds, open or not.
    var pooledConnections: Int { pool.held }
    /// Idle connections whose receive buffer a blob read grew large.
    var idleConnectionsWithLargeBuffers: Int { pool.holdingLargeBuffers }

    /// A fetcher for `host:port`; `hostHeader` is the `Host` its requests carry. Connections live
    /// on `group`, NIO's shared event loops by default.
    convenience init(
        host: String, port: Int, hostHeader: String, configuration: Configuration = .init(),
        group: (any EventLoopGroup)? = nil
    ) throws {
        self.init(
            host: host, port: port, hostHeader: hostHeader,
            sslContext: try configuration.tls.map(NIOSSLContext.init(configuration:)),
            configuration: configuration, group: group)
    }

    /// A fetcher for `host:port` that speaks TLS with `sslContext` (plain text when `nil`),
    /// whatever `configuration.tls` says.
    ///
    /// Building a context is costly: one that trusts the system's certificate authorities parses
    /// them all, about 1 MiB of memory and a few milliseconds each. Fetchers with the same TLS
    /// settings (one per registry a proxy serves) should share one.
    init(
        host: String, port: Int, hostHeader: String, sslContext: NIOSSLContext?, configuration: Configuration = .init(),
        group: (any EventLoopGroup)? = nil
    ) {
        self.host = host
        self.port = port
        self.hostHeader = hostHeader
        self.configuration = configuration
        self.sslContext = sslContext
        self.group = group ?? MultiThreadedEventLoopGroup.singleton
        self.pool = ConnectionPool(
            capacity: configuration.idleConnections,
            largeBufferCapacity: configuration.idleConnectionsWithLargeBuffers)
    }

    /// Sends `GET target` (a path and query) with `headers` and returns the response head and its
    /// body, which the caller must read to its end or drop.
    ///
    /// Failures before the head arrives are thrown; failures while the body streams end the body
    /// sequence with the error, so a truncated body is never mistaken for a whole one.
    func get(_ target: String, headers: HTTPHeaders) async throws -> RegistryReadResponse {
        try await read(.GET, target, headers: headers)
    }

    /// Sends a `GET` or `HEAD` of `target` (a path and query), as ``get(_:headers:)`` does; a
    /// `HEAD`'s body is empty.
    func read(_ method: HTTPMethod, _ target: String, headers: HTTPHeaders) async throws -> RegistryReadResponse {
        // `any()` is the caller's own event loop when it runs on one of the group's.
        try await start(requestHead(method, target, headers: headers), on: group.any(), sameLoop: false) { eventLoop in
            let promise = eventLoop.makePromise(of: RegistryReadResponse.self)
            return (.sequence(promise), promise.futureResult)
        }.get()
    }

    /// ``read(_:_:headers:)`` for a caller on `eventLoop` that cannot suspend and writes the body
    /// to a channel of that loop as it is read: the request goes out on a connection of
    /// `eventLoop` itself, with the same connection reuse and retry, and the body's sink is called
    /// on `eventLoop`, with no thread switch per buffer.
    func startRelay(_ method: HTTPMethod, _ target: String, headers: HTTPHeaders, on eventLoop: any EventLoop) -> EventLoopFuture<
        RelayedResponse
    > {
        start(requestHead(method, target, headers: headers), on: eventLoop, sameLoop: true) { eventLoop in
            let promise = eventLoop.makePromise(of: RelayedResponse.self)
            return (.relay(promise), promise.futureResult)
        }
    }

    /// Sends `head` on an idle connection (one of `eventLoop`'s only, if `sameLoop`), or on a new
    /// one; once more on a new one if the idle one turns out to be closed.
    private func start<Response: Sendable>(
        _ head: HTTPRequestHead, on eventLoop: any EventLoop, sameLoop: Bool,
        waiter: @escaping @Sendable (any EventLoop) -> (RegistryReadHandler.Waiter, EventLoopFuture<Response>)
    ) -> EventLoopFuture<Response> {
        let fresh: @Sendable () -> EventLoopFuture<Response> = { [self] in
            connect(eventLoop).flatMap { $0.start(head, waiter: waiter).hop(to: eventLoop) }
        }
        guard let connection = pool.checkout(on: sameLoop ? eventLoop : nil) else { return fresh() }
        return connection.start(head, waiter: waiter).hop(to: eventLoop).flatMapError { error in
            // The upstream closed the idle connection before answering: try a fresh one.
            guard let error = error as? RegistryReadError, error.kind == .closedBeforeResponse else {
                return eventLoop.makeFailedFuture(error)
            }
            return fresh()
        }
    }

    private func requestHead(_ method: HTTPMethod, _ target: String, headers: HTTPHeaders) -> HTTPRequestHead {
        precondition(method == .GET || method == .HEAD, "RegistryReader only reads: GET or HEAD")
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: target, headers: headers)
        head.headers.replaceOrAdd(name: "Host", value: hostHeader)
        return head
    }

    /// Closes the idle connections.
    func shutdown() async {
        for connection in pool.drain() {
            try? await connection.channel.close()
        }
    }

    /// Opens a connection on `eventLoop`.
    private func connect(_ eventLoop: any EventLoop) -> EventLoopFuture<PooledConnection> {
        let configuration = configuration
        let sslContext = sslContext
        let serverName = host.contains(":") || host.allSatisfy({ $0.isNumber || $0 == "." }) ? nil : host
        let pool = pool
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(configuration.connectTimeout)
            .channelOption(
                .recvAllocator,
                value: AdaptiveRecvByteBufferAllocator(
                    minimum: 1024, initial: 64 * 1024, maximum: configuration.maximumReadSize)
            )
            // NIO keeps as many receive buffers per channel for reuse as it reads per wakeup (4 by
            // default): with 1 MiB reads that held 4 MiB per connection, idle pooled ones too.
            // One read per wakeup keeps one; the proxy's peak under 8 pulls and 4 pushes fell
            // from 54–87 to 31–57 MiB above idle at the same pull speed (Performance.md).
            .channelOption(.maxMessagesPerRead, value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let operations = channel.pipeline.syncOperations
                    if let sslContext {
                        try operations.addHandler(NIOSSLClientHandler(context: sslContext, serverHostname: serverName))
                    }
                    // Every header sent here is one NIO's decoder accepted from the client, the
                    // `Host` of a connector whose address was parsed, or an `Authorization` made
                    // of base64 or of a token checked when it arrived (``RegistryToken``): none
                    // can hold a line break, so they are not scanned again for every request.
                    try operations.addHTTPClientHandlers(enableOutboundHeaderValidation: false)
                    try operations.addHandler(
                        RegistryReadHandler(
                            bufferedReads: configuration.bufferedReads, readTimeout: configuration.readTimeout,
                            idleTimeout: configuration.idleTimeout, pool: pool))
                }
            }
        let (host, port) = (host, port)
        let connectTimeout = configuration.connectTimeout.wholeSecondsForMessages
        return bootstrap.connect(host: host, port: port).flatMapErrorThrowing { error in
            if case ChannelError.connectTimeout? = error as? ChannelError {
                throw RegistryReadError(.timedOut, "\(host):\(port) did not accept a connection within \(connectTimeout) s")
            }
            throw RegistryReadError(.unreachable, "cannot connect to \(host):\(port): \(error)")
        }.flatMapThrowing { [self] channel in
            opened.wrappingAdd(1, ordering: .relaxed)
            // Connecting completes on the channel's event loop.
            guard let handler = try? channel.pipeline.syncOperations.handler(type: RegistryReadHandler.self) else {
                channel.close(promise: nil)
                throw RegistryReadError(.closedBeforeResponse, "the connection to \(host):\(port) closed at once")
            }
            return PooledConnection(channel: channel, handler: NIOLoopBound(handler, eventLoop: channel.eventLoop))
        }
    }
}

/// A response from ``RegistryReader``: the head now, the body as it arrives.
struct RegistryReadResponse: Sendable {
    /// The status line and headers.
    let head: HTTPResponseHead
    /// The body, in the buffers it was read in.
    let body: RegistryReadBody
}

/// The body of a ``RegistryReadResponse``: an async sequence of the buffers read from the upstream.
///
/// Dropping it before its end closes the connection it was read from.
struct RegistryReadBody: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    typealias Producer = NIOThrowingAsyncSequenceProducer<
        ByteBuffer, any Error, NIOAsyncSequenceProducerBackPressureStrategies.HighLowWatermark, RegistryReadHandler.Demand
    >
    let producer: Producer

    /// Iterates the buffers.
    struct AsyncIterator: AsyncIteratorProtocol {
        var base: Producer.AsyncIterator

        /// The next buffer, `nil` at the end; throws if the upstream failed before the end.
        mutating func next() async throws -> ByteBuffer? {
            try await base.next()
        }
    }

    func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: producer.makeAsyncIterator())
    }
}

/// Why a ``RegistryReader`` request failed.
struct RegistryReadError: Error, CustomStringConvertible, Sendable {
    /// What went wrong.
    enum Kind: Sendable {
        /// No connection could be made.
        case unreachable
        /// The connection closed before a response head arrived.
        case closedBeforeResponse
        /// The connection closed, or failed, before the body ended.
        case truncated
        /// The upstream did not accept a connection within the connect timeout, or stayed silent
        /// for longer than the read timeout.
        case timedOut
    }

    /// What went wrong.
    let kind: Kind
    /// What happened, for logs and error messages.
    let reason: String

    init(_ kind: Kind, _ reason: String) {
        self.kind = kind
        self.reason = reason
    }

    var description: String { reason }
}

/// An open connection with a ``RegistryReadHandler`` at the end of its pipeline.
struct PooledConnection: Sendable {
    let channel: any Channel
    /// The handler, kept rather than looked up in the pipeline for every request.
    let handler: NIOLoopBound<RegistryReadHandler>

    /// Sends from any thread; the future completes on the connection's event loop.
    func start<Response: Sendable>(
        _ head: HTTPRequestHead,
        waiter: @escaping @Sendable (any EventLoop) -> (RegistryReadHandler.Waiter, EventLoopFuture<Response>)
    ) -> EventLoopFuture<Response> {
        // Usually the caller already runs on the connection's event loop (the pool prefers such a
        // connection): then the request goes out now instead of as one more job on the loop.
        if channel.eventLoop.inEventLoop {
            return send(head, waiter: waiter)
        }
        let connection = self
        return channel.eventLoop.flatSubmit { connection.send(head, waiter: waiter) }
    }

    /// Hands the request to the connection's handler; on its event loop only.
    private func send<Response: Sendable>(
        _ head: HTTPRequestHead,
        waiter: (any EventLoop) -> (RegistryReadHandler.Waiter, EventLoopFuture<Response>)
    ) -> EventLoopFuture<Response> {
        let (waiting, response) = waiter(channel.eventLoop)
        guard handler.value.send(head, connection: self, for: waiting) else {
            waiting.fail(RegistryReadError(.closedBeforeResponse, "the connection is gone"))
            return response
        }
        return response
    }
}

/// Idle connections, most recently used last.
final class ConnectionPool: Sendable {
    /// A read at least this large means the connection's receive buffer grew at least as large
    /// (NIO keeps one per connection for reuse, and never shrinks it).
    static let largeRead = 256 * 1024

    private struct Idle {
        let connection: PooledConnection
        let holdsLargeBuffer: Bool
    }

    private let idle = Mutex<[Idle]>([])
    private let capacity: Int
    private let largeBufferCapacity: Int

    init(capacity: Int, largeBufferCapacity: Int) {
        self.capacity = capacity
        self.largeBufferCapacity = largeBufferCapacity
    }

    /// The most recently used open connection, preferring one on the calling thread's event loop
    /// (its response then needs no thread switch to reach the task that waits for it); only one
    /// on `eventLoop` when that is given.
    func checkout(on eventLoop: (any EventLoop)? = nil) -> PooledConnection? {
        idle.withLock { idle in
            idle.removeAll { !$0.connection.channel.isActive }
            if let eventLoop {
                return idle.lastIndex { $0.connection.channel.eventLoop === eventLoop }.map { idle.remove(at: $0).connection }
            }
            if let local = idle.lastIndex(where: { $0.connection.channel.eventLoop.inEventLoop }) {
                return idle.remove(at: local).connection
            }
            return idle.popLast()?.connection
        }
    }

    /// Forgets `channel`'s connection (it is being closed), so that nothing keeps it alive.
    func remove(_ channel: any Channel) {
        idle.withLock { idle in idle.removeAll { $0.connection.channel === channel } }
    }

    /// Keeps `connection` for reuse and returns `true`; `false` when the pool is full (or, for a
    /// connection that `holdsLargeBuffer`, when enough of those are idle already), and then the
    /// caller closes it.
    func checkin(_ connection: PooledConnection, holdsLargeBuffer: Bool) -> Bool {
        idle.withLock { idle -> Bool in
            guard idle.count < capacity else { return false }
            if holdsLargeBuffer, idle.count(where: \.holdsLargeBuffer) >= largeBufferCapacity { return false }
            idle.append(Idle(connection: connection, holdsLargeBuffer: holdsLargeBuffer))
            return true
        }
    }

    var count: Int { idle.withLock { $0.filter(\.connection.channel.isActive).count } }

    var held: Int { idle.withLock { $0.count } }

    /// Idle connections holding a large receive buffer.
    var holdingLargeBuffers: Int { idle.withLock { $0.filter(\.holdsLargeBuffer).count } }

    func drain() -> [PooledConnection] {
        idle.withLock { idle in
            defer { idle.removeAll() }
            return idle.map(\.connection)
        }
    }
}
