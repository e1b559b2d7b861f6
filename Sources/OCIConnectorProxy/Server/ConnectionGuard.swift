import NIOCore

/// The first handler of every client connection: it admits the connection under the proxy's
/// connection limit and closes it when it holds the proxy without sending a request, before any
/// parser sees its bytes.
///
/// A connection over ``ConnectionLimits/maxConnections`` is answered `503` and closed. One that
/// starts a request head and does not finish it within ``ConnectionLimits/headerTimeout`` is
/// answered `408` and closed; one that sends nothing for ``ConnectionLimits/idleTimeout`` while
/// no request is under way is closed (as nginx and Go's servers close idle keep-alive
/// connections). Whether a request is under way comes from the handlers that answer requests,
/// as ``RequestActivity`` events; the clock is the event loop's, so tests drive it.
///
/// One scheduled task per connection at most, re-armed only when it fires: the phases change
/// with every request, and re-scheduling at each change would cost an allocation a request. It
/// fires at the current deadline or a quarter of the shorter timeout from now, whichever is
/// sooner, so a head that starts while an idle deadline is scheduled is caught at most that
/// late.
final class ConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    private let limits: ConnectionLimits
    private let counter: ConnectionCounter
    private var deadlines: ConnectionDeadlines?
    private var timer: Scheduled<Void>?
    private var admitted = false
    private var closing = false

    /// The longest a phase's expiry may go unnoticed.
    private let checkInterval: TimeAmount

    init(limits: ConnectionLimits, counter: ConnectionCounter) {
        self.limits = limits
        self.counter = counter
        self.checkInterval = .nanoseconds(max(min(limits.headerTimeout, limits.idleTimeout).nanoseconds / 4, 1_000_000))
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { start(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        start(context: context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        stop()
    }

    func channelInactive(context: ChannelHandlerContext) {
        stop()
        context.fireChannelInactive()
    }

    private func start(context: ChannelHandlerContext) {
        guard deadlines == nil, !closing else { return }
        guard counter.admit() else {
            refuse(
                RegistryErrorResponse(
                    .serviceUnavailable, "UNAVAILABLE", "the proxy is serving as many connections as it may; retry later"),
                context: context)
            return
        }
        admitted = true
        deadlines = ConnectionDeadlines(
            headerTimeout: limits.headerTimeout, idleTimeout: limits.idleTimeout,
            openedAt: context.eventLoop.now)
        arm(context: context)
    }

    private func stop() {
        timer?.cancel()
        timer = nil
        if admitted {
            admitted = false
            counter.release()
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }  // Nothing more is read from a connection being refused.
        deadlines?.bytesRead(at: context.eventLoop.now)
        context.fireChannelRead(data)
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard let activity = event as? RequestActivity else {
            context.triggerUserOutboundEvent(event, promise: promise)
            return
        }
        switch activity {
        case .started: deadlines?.requestStarted()
        case .ended:
            deadlines?.requestEnded(at: context.eventLoop.now)
            arm(context: context)
        }
        promise?.succeed()
    }

    /// Schedules the check of the current phase's deadline, unless one is scheduled already.
    private func arm(context: ChannelHandlerContext) {
        guard timer == nil, let deadline = deadlines?.deadline else { return }
        let fireAt = min(deadline, context.eventLoop.now + checkInterval)
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: fireAt) { [self] in
            timer = nil
            check(context: context)
        }
    }

    private func check(context: ChannelHandlerContext) {
        guard let deadlines, !closing, context.channel.isActive else { return }
        switch deadlines.expiry(at: context.eventLoop.now) {
        case .idle?:
            closing = true
            context.close(promise: nil)
        case .header?:
            refuse(
                RegistryErrorResponse(.requestTimeout, "UNAVAILABLE", "the request head did not arrive in time"), context: context
            )
        case nil:
            arm(context: context)  // The phase changed since this was scheduled.
        }
    }

    /// Answers with `error` and closes: nothing else is being answered on the connection.
    private func refuse(_ error: RegistryErrorResponse, context: ChannelHandlerContext) {
        closing = true
        context.writeAndFlush(wrapOutboundOut(.byteBuffer(Self.answer(error, allocator: context.channel.allocator))))
            .assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }

    /// An error answer in bytes, closing the connection.
    static func answer(_ error: RegistryErrorResponse, allocator: ByteBufferAllocator) -> ByteBuffer {
        let body = error.json
        var head = "HTTP/1.1 \(error.status.code) \(error.status.reasonPhrase)\r\n"
        for (name, value) in error.responseHeaders { head += "\(name): \(value)\r\n" }
        head += "Content-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n"
        var buffer = allocator.buffer(capacity: head.utf8.count + body.utf8.count)
        buffer.writeString(head)
        buffer.writeString(body)
        return buffer
    }
}
