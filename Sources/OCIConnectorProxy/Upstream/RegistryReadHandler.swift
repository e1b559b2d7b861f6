import NIOCore
import NIOHTTP1

/// The last handler of a ``RegistryReader`` connection: sends one request at a time, hands the body
/// to an async sequence (or, for callers on the event loop, to a ``BodySink``), and reads
/// from the socket only while the consumer wants more.
///
/// Runs on its channel's event loop. Each request gets a new generation number, so that what
/// the consumer of an earlier body does late (drop it, ask for more) cannot touch the next
/// request on the same connection.
final class RegistryReadHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    /// Tells the handler when the body's consumer wants more, or has gone.
    struct Demand: NIOAsyncSequenceProducerDelegate {
        let handler: NIOLoopBound<RegistryReadHandler>
        let generation: Int

        func produceMore() {
            if handler.eventLoop.inEventLoop {
                handler.value.produceMore(generation)
            } else {
                let (handler, generation) = (handler, generation)
                handler.eventLoop.execute { handler.value.produceMore(generation) }
            }
        }

        func didTerminate() {
            let (handler, generation) = (handler, generation)
            handler.eventLoop.execute { handler.value.consumerGone(generation) }
        }
    }

    /// Who waits for the response head, and so how the body is handed on.
    enum Waiter {
        case sequence(EventLoopPromise<RegistryReadResponse>)
        case relay(EventLoopPromise<RelayedResponse>)

        func fail(_ error: RegistryReadError) {
            switch self {
            case .sequence(let promise): promise.fail(error)
            case .relay(let promise): promise.fail(error)
            }
        }
    }

    private enum State {
        case idle
        case awaitingHead(Waiter, PooledConnection)
        case streaming(RegistryReadBody.Producer.Source, PooledConnection, keepAlive: Bool)
        case relaying(Relay, PooledConnection, keepAlive: Bool)
        case closed
    }

    /// A body handed to a sink; what arrives before the sink does waits here (reading paused).
    private final class Relay {
        var sink: (any BodySink)?
        var waiting = CircularBuffer<ByteBuffer>()
        var ended = false
    }

    private let bufferedReads: Int
    private let readTimeout: TimeAmount
    private let idleTimeout: TimeAmount
    private let pool: ConnectionPool
    /// The largest body part this connection has read: its receive buffer is at least as large.
    private var largestRead = 0
    private var state = State.idle
    private var generation = 0
    /// The consumer has enough buffered: reads wait.
    private var paused = false
    /// A read the channel asked for while paused.
    private var heldRead = false
    private var context: ChannelHandlerContext?
    private var lastRead = NIODeadline.now()
    private var timer: Scheduled<Void>?
    /// Closes the connection when it has sat in the pool for the idle timeout. It stays armed
    /// while the connection is reused and checks, when it fires, how long the connection has
    /// been idle: arming and cancelling a timer for every request was a twentieth of the CPU a
    /// relayed manifest `HEAD` cost.
    private var idleTimer: Scheduled<Void>?
    /// When the connection last went back to the pool.
    private var idleSince = NIODeadline.now()

    init(bufferedReads: Int, readTimeout: TimeAmount, idleTimeout: TimeAmount, pool: ConnectionPool) {
        self.bufferedReads = bufferedReads
        self.readTimeout = readTimeout
        self.idleTimeout = idleTimeout
        self.pool = pool
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    /// Sends a request on this (idle) connection for `waiter`, which learns of the response head.
    /// Returns `false`, sending nothing, when the connection cannot take a request.
    func send(_ head: HTTPRequestHead, connection: PooledConnection, for waiter: Waiter) -> Bool {
        guard case .idle = state, let context, context.channel.isActive else { return false }
        generation += 1
        paused = false
        state = .awaitingHead(waiter, connection)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        lastRead = .now()
        armTimer(context)
        resumeReading(context)
        return true
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        lastRead = .now()
        switch (unwrapInboundIn(data), state) {
        case (.head(let head), .awaitingHead(.relay(let promise), let connection)):
            guard head.status.code >= 200 else { return }  // 1xx: the real response follows.
            let relay = Relay()
            state = .relaying(relay, connection, keepAlive: head.isKeepAlive)
            promise.succeed(
                RelayedResponse(
                    head: head,
                    body: RelayedBody(
                        handler: NIOLoopBound(self, eventLoop: context.eventLoop), generation: generation)))

        case (.head(let head), .awaitingHead(.sequence(let promise), let connection)):
            guard head.status.code >= 200 else { return }  // 1xx: the real response follows.
            let sequence = RegistryReadBody.Producer.makeSequence(
                backPressureStrategy: .init(lowWatermark: max(1, bufferedReads / 2), highWatermark: bufferedReads),
                finishOnDeinit: false,
                delegate: Demand(handler: NIOLoopBound(self, eventLoop: context.eventLoop), generation: generation))
            state = .streaming(sequence.source, connection, keepAlive: head.isKeepAlive)
            promise.succeed(RegistryReadResponse(head: head, body: RegistryReadBody(producer: sequence.sequence)))

        case (.body(let buffer), .streaming(let source, _, _)):
            largestRead = max(largestRead, buffer.readableBytes)
            switch source.yield(buffer) {
            case .produceMore: break
            case .stopProducing: paused = true
            case .dropped: close(context)
            }

        case (.body(let buffer), .relaying(let relay, _, _)):
            largestRead = max(largestRead, buffer.readableBytes)
            if let sink = relay.sink {
                if !sink.bodyPart(buffer) { paused = true }
            } else {
                relay.waiting.append(buffer)
                paused = true
            }

        case (.end, .streaming(let source, let connection, let keepAlive)):
            complete(connection, keepAlive: keepAlive, context: context)
            source.finish()

        case (.end, .relaying(let relay, let connection, let keepAlive)):
            if let sink = relay.sink {
                complete(connection, keepAlive: keepAlive, context: context)
                sink.bodyEnded(nil)
            } else {
                relay.ended = true
            }

        case (_, .closed):
            break
        default:
            fail(RegistryReadError(.truncated, "the upstream sent a response part out of order"))
            close(context)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(RegistryReadError(phase == .body ? .truncated : .closedBeforeResponse, "the upstream connection failed: \(error)"))
        close(context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(RegistryReadError(phase == .body ? .truncated : .closedBeforeResponse, "the upstream closed the connection"))
        state = .closed
        timer?.cancel()
        idleTimer?.cancel()
        pool.remove(context.channel)
        context.fireChannelInactive()
    }

    // MARK: Outbound

    func read(context: ChannelHandlerContext) {
        if paused {
            heldRead = true
        } else {
            context.read()
        }
    }

    // MARK: Demand

    fileprivate func produceMore(_ generation: Int) {
        guard generation == self.generation, phase == .body, let context else { return }
        paused = false
        lastRead = .now()
        armTimer(context)
        resumeReading(context)
    }

    fileprivate func consumerGone(_ generation: Int) {
        guard generation == self.generation, phase == .body, let context else { return }
        if case .relaying(let relay, let connection, let keepAlive) = state, relay.ended {
            // All of it had arrived: the connection is ready for the next request.
            complete(connection, keepAlive: keepAlive, context: context)
            return
        }
        // The body was dropped before its end: what is left of it cannot be skipped cheaply.
        state = .closed
        close(context)
    }

    /// Gives the body to `sink`: first what waited for it, then the rest as it arrives.
    fileprivate func relay(to sink: any BodySink, _ generation: Int) {
        guard generation == self.generation else { return }
        guard case .relaying(let relay, let connection, let keepAlive) = state, relay.sink == nil, let context else {
            if case .closed = state {
                sink.bodyEnded(RegistryReadError(.truncated, "the upstream connection closed before the body ended"))
            }
            return
        }
        relay.sink = sink
        var wantsMore = true
        while let buffer = relay.waiting.popFirst() {
            wantsMore = sink.bodyPart(buffer)
        }
        guard generation == self.generation, case .relaying = state else { return }  // The sink dropped it.
        if relay.ended {
            complete(connection, keepAlive: keepAlive, context: context)
            sink.bodyEnded(nil)
        } else if wantsMore {
            produceMore(generation)
        }
    }

    /// The response ended: the connection goes back to the pool (or closes).
    private func complete(_ connection: PooledConnection, keepAlive: Bool, context: ChannelHandlerContext) {
        state = .idle
        paused = false
        // Idle connections keep reading, so that an upstream closing them is noticed.
        resumeReading(context)
        // Back in the pool before the consumer sees the end, so its next request finds it.
        if keepAlive, pool.checkin(connection, holdsLargeBuffer: largestRead >= ConnectionPool.largeRead) {
            idleSince = .now()
            armIdleTimer(context, deadline: idleSince + idleTimeout)
        } else {
            close(context)
        }
    }

    // MARK: Pieces

    private enum Phase { case none, head, body }

    private var phase: Phase {
        switch state {
        case .awaitingHead: .head
        case .streaming, .relaying: .body
        case .idle, .closed: .none
        }
    }

    private func resumeReading(_ context: ChannelHandlerContext) {
        guard heldRead else { return }
        heldRead = false
        context.read()
    }

    private func fail(_ error: RegistryReadError) {
        switch state {
        case .awaitingHead(let waiter, _):
            waiter.fail(error)
        case .streaming(let source, _, _): source.finish(error)
        case .relaying(let relay, _, _):
            state = .closed
            relay.sink?.bodyEnded(error)
        case .idle, .closed: break
        }
        state = .closed
    }

    private func close(_ context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        idleTimer?.cancel()
        idleTimer = nil
        context.close(promise: nil)
    }

    /// Arms the idle timer for `deadline` unless it is armed already (for an earlier deadline).
    private func armIdleTimer(_ context: ChannelHandlerContext, deadline: NIODeadline) {
        guard idleTimer == nil else { return }
        idleTimer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
            idleTimer = nil
            // Busy: it is armed again when the connection goes back to the pool.
            guard case .idle = state, let context = self.context else { return }
            let closesAt = idleSince + idleTimeout
            guard NIODeadline.now() >= closesAt else {
                armIdleTimer(context, deadline: closesAt)
                return
            }
            state = .closed
            pool.remove(context.channel)
            close(context)
        }
    }

    /// Checks for silence while a response is awaited or read (not while the consumer is behind).
    private func armTimer(_ context: ChannelHandlerContext) {
        guard timer == nil else { return }
        let deadline = lastRead + readTimeout
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
            timer = nil
            guard let context = self.context, phase != .none, !paused else { return }
            if NIODeadline.now() >= lastRead + readTimeout {
                let error = RegistryReadError(
                    .timedOut, "the upstream sent nothing for \(readTimeout.nanoseconds / 1_000_000_000) s")
                fail(error)
                close(context)
            } else {
                armTimer(context)
            }
        }
    }
}

/// Takes a relayed body's buffers on the connection's event loop, as they are read.
protocol BodySink: AnyObject {
    /// One more buffer of the body. Returns whether the sink wants more now; after `false`,
    /// reading stops (buffers of the current read may still come) until ``RelayedBody/resume()``.
    func bodyPart(_ buffer: ByteBuffer) -> Bool
    /// The body ended: completely when `error` is `nil`, cut short otherwise.
    func bodyEnded(_ error: RegistryReadError?)
}

/// A response whose body goes to a ``BodySink`` instead of an async sequence.
struct RelayedResponse: Sendable {
    /// The status line and headers.
    let head: HTTPResponseHead
    /// The body, not read beyond what already arrived until it is given a sink.
    let body: RelayedBody
}

/// The body of a ``RelayedResponse``; used on its connection's event loop only.
struct RelayedBody: Sendable {
    let handler: NIOLoopBound<RegistryReadHandler>
    let generation: Int

    /// Hands the body to `sink`; it must be given one, or be dropped.
    func relay(to sink: any BodySink) {
        handler.value.relay(to: sink, generation)
    }

    /// The sink wants more after it said it had enough.
    func resume() {
        handler.value.produceMore(generation)
    }

    /// Drops the rest of the body, which closes its connection unless all of it had arrived.
    func drop() {
        handler.value.consumerGone(generation)
    }
}
