import NIOCore
import NIOHTTP1

/// What answers one request: started with its head, given its body as it arrives, and told when
/// the client can take more or has gone. Runs on the client connection's event loop.
protocol ClientExchange: AnyObject {
    /// A part of the request's body.
    func requestBodyPart(_ buffer: ByteBuffer)
    /// The request's body is complete.
    func requestEnded()
    /// The request's body will not come whole: the connection failed before its end.
    func requestFailed(_ error: any Error)
    /// The client connection is writable again after it was not.
    func clientWritable()
    /// The client connection closed: whatever is under way for it stops.
    func clientClosed()
}

/// Starts the exchange that answers each request on a connection.
protocol ExchangeStarter: Sendable {
    /// Decides what to do with `head` and starts doing it, writing the answer to `connection`;
    /// `nil` when the answer is complete already.
    func startExchange(for head: HTTPRequestHead, on connection: ClientConnectionHandler) -> (any ClientExchange)?
}

/// The only reader of a client connection's requests, after NIO's HTTP/1 decoder: it starts one
/// exchange per request, in order, gives it the request's body, and writes its answer, as
/// ``ClientConnectionState`` decides.
///
/// Exchanges write through the methods below, on the event loop. A body is written as it comes;
/// when the connection stops being writable, exchanges pause their source until
/// ``ClientExchange/clientWritable()``.
final class ClientConnectionHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let starter: any ExchangeStarter
    private var state = ClientConnectionState()
    private var exchange: (any ClientExchange)?
    private var context: ChannelHandlerContext?
    /// The `Date` of answers written here.
    private var date = HTTPDate.Cache()
    /// Requests wait until the client has read the answers before them: a client that sends
    /// many and reads none makes the proxy hold about one answer, not one per request.
    private var waitsForWritability = false
    /// Whether the connection is TLS: the proxy's own locations are `https://` then.
    let isSecure: Bool
    /// The client's address, for the request log.
    private(set) var clientAddress: String?
    /// The proxy token this connection's last request verified with.
    var lastVerified: ClientAuthenticator.LastVerified?
    /// How long a request's body may stop arriving while it is wanted (``ConnectionLimits/bodyTimeout``).
    private let bodyTimeout: TimeAmount?
    /// When the body of the request being answered last arrived, or was last wanted again.
    private var bodyActive = NIODeadline.uptimeNanoseconds(0)
    /// The check of ``bodyTimeout``, while a request's body is awaited.
    private var bodyCheck: Scheduled<Void>?

    init(starter: any ExchangeStarter, secure: Bool = false, bodyTimeout: TimeAmount? = nil) {
        self.starter = starter
        self.isSecure = secure
        self.bodyTimeout = bodyTimeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.eventLoop = context.eventLoop
        clientAddress = Self.address(of: context.channel)
    }

    func channelActive(context: ChannelHandlerContext) {
        if clientAddress == nil { clientAddress = Self.address(of: context.channel) }
        context.fireChannelActive()
    }

    private static func address(of channel: any Channel) -> String? {
        guard let address = channel.remoteAddress else { return nil }
        if let ip = address.ipAddress, let port = address.port {
            return address.protocol == .inet6 ? "[\(ip)]:\(port)" : "\(ip):\(port)"
        }
        return "\(address)"
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        perform(state.received(unwrapInboundIn(data)), context: context)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // The last handler: there is no one to tell.
    }

    private func perform(_ action: ClientConnectionState.PartAction, context: ChannelHandlerContext) {
        switch action {
        case .start(let head):
            let started = starter.startExchange(for: head, on: self)
            // An exchange may have answered before it returned.
            if state.isAnswering { exchange = started }
            if bodyTimeout != nil, head.announcesBody { watchBody(context: context) }
        case .body(let buffer):
            if bodyCheck != nil { bodyActive = context.eventLoop.now }
            exchange?.requestBodyPart(buffer)
        case .end(let completion):
            stopWatchingBody()
            exchange?.requestEnded()
            complete(completion, context: context)
        case .wait, .drop:
            break
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        stopWatchingBody()
        state.closed()
        if let exchange {
            self.exchange = nil
            exchange.clientClosed()
        }
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            exchange?.clientWritable()
            if waitsForWritability {
                waitsForWritability = false
                takeUpWaiting(context: context)
            }
        }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            if state.quiesce() == .close { context.close(promise: nil) }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A request that will not come whole (the decoder failed, or the connection did): its
        // exchange learns it, and the connection closes once its answer is written, or now.
        if let exchange, case .exchanging(requestEnded: false, _) = state.phase {
            exchange.requestFailed(error)
            if error is HTTPParserError { return }  // The persistence handler closes after the answer.
        }
        context.close(promise: nil)
    }

    // MARK: Outbound

    func read(context: ChannelHandlerContext) {
        if state.readRequested() == .read { context.read() }
    }

    // MARK: Writing, for exchanges

    /// The connection's event loop, where exchanges run.
    private(set) var eventLoop: (any EventLoop)!
    /// Whether the client is still connected.
    var isActive: Bool { context?.channel.isActive ?? false }

    /// Writes the head of the answer (without flushing: the body or the end follows).
    func writeHead(_ status: HTTPResponseStatus, _ headers: HTTPHeaders) {
        guard let context else { return }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
    }

    /// Tells a client that waits for it to send the request's body.
    func writeContinue() {
        guard let context else { return }
        context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .continue))), promise: nil)
    }

    /// Writes a part of the answer's body; returns whether the client can take more now.
    func writeBodyPart(_ buffer: ByteBuffer) -> Bool {
        guard let context else { return false }
        context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        return context.channel.isWritable
    }

    /// Writes a part of the answer's body; the future completes once it is written.
    func writeBodyPart(_ buffer: ByteBuffer, promise: EventLoopPromise<Void>) {
        guard let context else { return promise.fail(ChannelError.ioOnClosedChannel) }
        context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: promise)
    }

    /// Writes the end of the answer: the exchange is over once its request has ended too.
    func writeEnd() {
        guard let context else { return }
        let completion = state.responseEnded()
        if completion != .none { exchange = nil }
        guard completion == .close else {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            complete(completion, context: context)
            return
        }
        // Closing fails writes still pending: the connection closes once the end is written.
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }

    /// Writes a whole answer of the proxy's own (its body left out for a `HEAD`) and logs it.
    func writeAnswer(_ answer: LocalAnswer, method: HTTPMethod) {
        let body = ByteBuffer(string: answer.body)
        var headers = answer.headers
        headers.add(name: "Content-Length", value: "\(body.readableBytes)")
        headers.add(name: "Date", value: date.now())
        writeHead(answer.status, headers)
        if method != .HEAD {
            answer.log.bytesOut.add(body.readableBytes)
            context?.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        }
        answer.log.finish(status: Int(answer.status.code), detail: answer.detail)
        writeEnd()
    }

    /// The answer cannot be completed (its source failed after its head was written): the
    /// client learns it only from the connection closing.
    func abort() {
        state.closed()
        exchange = nil
        context?.close(promise: nil)
    }

    /// The exchange has enough of the request's body for now: reading pauses.
    func pauseRequestBody() {
        state.pauseBody()
    }

    /// The exchange wants more of the request's body.
    func resumeRequestBody() {
        // The body's timeout counts from now: while paused, the proxy held it back, not the client.
        if bodyCheck != nil, let context { bodyActive = context.eventLoop.now }
        if state.resumeBody() == .read { context?.read() }
    }

    // MARK: The body's timeout

    /// Checks, while the body of the request just started is awaited, that it keeps arriving.
    private func watchBody(context: ChannelHandlerContext) {
        guard let bodyTimeout, case .exchanging(requestEnded: false, _) = state.phase else { return }
        bodyActive = context.eventLoop.now
        scheduleBodyCheck(at: bodyActive + bodyTimeout, context: context)
    }

    private func scheduleBodyCheck(at deadline: NIODeadline, context: ChannelHandlerContext) {
        bodyCheck = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
            bodyCheck = nil
            checkBody(context: context)
        }
    }

    private func stopWatchingBody() {
        bodyCheck?.cancel()
        bodyCheck = nil
    }

    /// One check is scheduled at a time, for when the body would be late; arriving parts only
    /// move ``bodyActive``, so a streaming upload costs no timer per part.
    private func checkBody(context: ChannelHandlerContext) {
        guard let bodyTimeout, case .exchanging(requestEnded: false, _) = state.phase else { return }
        let now = context.eventLoop.now
        if state.bodyPaused { bodyActive = now }  // The proxy is not reading it: not the client's doing.
        guard now < bodyActive + bodyTimeout else { return abandonRequest(RequestBodyTimeout(timeout: bodyTimeout)) }
        scheduleBodyCheck(at: bodyActive + bodyTimeout, context: context)
    }

    /// The request's body will not be read to its end (it stopped arriving, or its upstream
    /// stopped taking it): the request is abandoned. Its exchange answers with the reason's
    /// refusal if it has not begun its answer; the connection closes after the answer.
    func abandonRequest(_ reason: any RequestAbandonment) {
        guard let context, let completion = state.abandonRequest() else { return }
        stopWatchingBody()
        if let exchange {
            exchange.requestFailed(reason)
        }
        if completion == .close {
            exchange = nil
            context.close(promise: nil)
        }
    }

    // MARK: Completion

    private func complete(_ completion: ClientConnectionState.Completion, context: ChannelHandlerContext) {
        switch completion {
        case .none:
            return
        case .close:
            exchange = nil
            context.close(promise: nil)
        case .takeUpWaiting:
            exchange = nil
            // Most connections send one request at a time: then nothing waits, and no task is
            // scheduled for each request.
            guard state.hasWaiting else { return }
            // On the next turn of the loop: this may run inside an exchange's write.
            context.eventLoop.assumeIsolated().execute { [self] in
                takeUpWaiting(context: context)
            }
        }
    }

    /// Starts the requests that waited, while the client takes the answers, then reads on.
    private func takeUpWaiting(context: ChannelHandlerContext) {
        guard context.channel.isActive else { return }
        guard context.channel.isWritable else {
            waitsForWritability = true
            return
        }
        while let action = state.nextWaiting() {
            perform(action, context: context)
            if case .end(.takeUpWaiting) = action { return }  // Taken up again, on the next turn.
        }
        if state.heldReadDue() { context.read() }
    }
}
