import NIOCore
import NIOHTTP1

/// The last handler of a ``BlobFetcher`` connection: sends one request at a time, hands the body
/// to an async sequence, and reads from the socket only while that sequence wants more.
///
/// Runs on its channel's event loop. Each request gets a new generation number, so that what
/// the consumer of an earlier body does late (drop it, ask for more) cannot touch the next
/// request on the same connection.
final class BlobResponseHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    /// Tells the handler when the body's consumer wants more, or has gone.
    struct Demand: NIOAsyncSequenceProducerDelegate {
        let handler: NIOLoopBound<BlobResponseHandler>
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

    private enum State {
        case idle
        case awaitingHead(EventLoopPromise<BlobResponse>, PooledConnection)
        case streaming(BlobBody.Producer.Source, PooledConnection, keepAlive: Bool)
        case closed
    }

    private let bufferedReads: Int
    private let readTimeout: TimeAmount
    private let idleTimeout: TimeAmount
    private let pool: ConnectionPool
    private var state = State.idle
    private var generation = 0
    /// The consumer has enough buffered: reads wait.
    private var paused = false
    /// A read the channel asked for while paused.
    private var heldRead = false
    private var context: ChannelHandlerContext?
    private var lastRead = NIODeadline.now()
    private var timer: Scheduled<Void>?
    /// Closes the connection when it has sat in the pool for the idle timeout.
    private var idleTimer: Scheduled<Void>?

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

    /// Sends a request on this (idle) connection; the future completes with the response head.
    func send(_ head: HTTPRequestHead, connection: PooledConnection) -> EventLoopFuture<BlobResponse> {
        guard case .idle = state, let context, context.channel.isActive else {
            return connection.channel.eventLoop.makeFailedFuture(BlobFetchError(.closedBeforeResponse, "the connection is gone"))
        }
        idleTimer?.cancel()
        idleTimer = nil
        generation += 1
        paused = false
        let promise = context.eventLoop.makePromise(of: BlobResponse.self)
        state = .awaitingHead(promise, connection)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        lastRead = .now()
        armTimer(context)
        resumeReading(context)
        return promise.futureResult
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        lastRead = .now()
        switch (unwrapInboundIn(data), state) {
        case (.head(let head), .awaitingHead(let promise, let connection)):
            guard head.status.code >= 200 else { return }  // 1xx: the real response follows.
            let sequence = BlobBody.Producer.makeSequence(
                backPressureStrategy: .init(lowWatermark: max(1, bufferedReads / 2), highWatermark: bufferedReads),
                finishOnDeinit: false,
                delegate: Demand(handler: NIOLoopBound(self, eventLoop: context.eventLoop), generation: generation))
            state = .streaming(sequence.source, connection, keepAlive: head.isKeepAlive)
            promise.succeed(BlobResponse(head: head, body: BlobBody(producer: sequence.sequence)))

        case (.body(let buffer), .streaming(let source, _, _)):
            switch source.yield(buffer) {
            case .produceMore: break
            case .stopProducing: paused = true
            case .dropped: close(context)
            }

        case (.end, .streaming(let source, let connection, let keepAlive)):
            state = .idle
            paused = false
            // Idle connections keep reading, so that an upstream closing them is noticed.
            resumeReading(context)
            // Back in the pool before the consumer sees the end, so its next request finds it.
            if keepAlive {
                pool.checkin(connection)
                armIdleTimer(context)
            } else {
                close(context)
            }
            source.finish()

        case (_, .closed):
            break
        default:
            fail(BlobFetchError(.truncated, "the upstream sent a response part out of order"))
            close(context)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(BlobFetchError(phase == .body ? .truncated : .closedBeforeResponse, "the upstream connection failed: \(error)"))
        close(context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(BlobFetchError(phase == .body ? .truncated : .closedBeforeResponse, "the upstream closed the connection"))
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

    private func produceMore(_ generation: Int) {
        guard generation == self.generation, case .streaming = state, let context else { return }
        paused = false
        lastRead = .now()
        armTimer(context)
        resumeReading(context)
    }

    private func consumerGone(_ generation: Int) {
        guard generation == self.generation, case .streaming = state, let context else { return }
        // The body was dropped before its end: what is left of it cannot be skipped cheaply.
        state = .closed
        close(context)
    }

    // MARK: Pieces

    private enum Phase { case none, head, body }

    private var phase: Phase {
        switch state {
        case .awaitingHead: .head
        case .streaming: .body
        case .idle, .closed: .none
        }
    }

    private func resumeReading(_ context: ChannelHandlerContext) {
        guard heldRead else { return }
        heldRead = false
        context.read()
    }

    private func fail(_ error: BlobFetchError) {
        switch state {
        case .awaitingHead(let promise, _): promise.fail(error)
        case .streaming(let source, _, _): source.finish(error)
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

    private func armIdleTimer(_ context: ChannelHandlerContext) {
        idleTimer = context.eventLoop.assumeIsolated().scheduleTask(in: idleTimeout) { [self] in
            idleTimer = nil
            guard case .idle = state, let context = self.context else { return }
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
                let error = BlobFetchError(.timedOut, "the upstream sent nothing for \(readTimeout.nanoseconds / 1_000_000_000) s")
                fail(error)
                close(context)
            } else {
                armTimer(context)
            }
        }
    }
}
