import NIOCore
import NIOHTTP1

/// Whether a client connection goes on after each answer, as RFC 9112 §9.3 decides it: a
/// state machine tested as a value, driven by ``ConnectionPersistenceHandler``.
///
/// The connection closes after the answer to a request that is its last: HTTP/1.0 without
/// `Connection: keep-alive`, `Connection: close`, `CONNECT` and any `Upgrade` (the proxy
/// tunnels and upgrades nothing, and the HTTP/1 decoder reads nothing after either), and after
/// the answers under way when the decoder fails. Whatever the client sends after its last
/// request is dropped unread: neither parsed nor kept.
struct ConnectionPersistence: Equatable {
    /// Request heads taken in.
    private(set) var requests = 0
    /// Answers complete.
    private(set) var answers = 0
    /// The request whose answer is the connection's last.
    private(set) var last: Int?
    /// Whether the last request has been read whole: nothing more is read after it.
    private(set) var lastRead = false
    /// Whether the parts of a request after the last are being dropped.
    private(set) var dropping = false

    /// What a request's head says about the connection.
    enum Continuation: Equatable {
        /// Another request may follow.
        case persistent
        /// The connection's last request; its body, if any, is still read.
        case last
        /// The last request, and nothing after its head is HTTP (`CONNECT`, `Upgrade`).
        case lastHead
    }

    enum Inbound: Equatable {
        case forward
        case drop
    }

    enum ParseFailure: Equatable {
        /// No answer is under way: answer the error and close.
        case answerAndClose
        /// Close once the answers under way are written.
        case closeAfterAnswers
        /// Already closing: nothing to do.
        case ignore
    }

    /// Whether the connection reads more from the client.
    var readsMore: Bool { !lastRead }

    /// A request head arrived.
    mutating func requestHead(_ continuation: Continuation) -> Inbound {
        guard last == nil else {
            dropping = true
            lastRead = true
            return .drop
        }
        requests += 1
        switch continuation {
        case .persistent: break
        case .last: last = requests
        case .lastHead:
            last = requests
            lastRead = true
        }
        return .forward
    }

    /// A body part (`isEnd` false) or the end of a request arrived.
    mutating func requestPart(isEnd: Bool) -> Inbound {
        guard !dropping else { return .drop }
        if isEnd, last == requests { lastRead = true }
        return .forward
    }

    /// Whether the answer whose head is being written is the connection's last, so it says
    /// `Connection: close`.
    var answerIsLast: Bool { last == answers + 1 }

    /// An answer is complete; `true` when the connection must close now.
    mutating func answerEnded() -> Bool {
        answers += 1
        return answers == last
    }

    /// The HTTP/1 decoder failed.
    mutating func parseFailed() -> ParseFailure {
        guard last == nil else { return .ignore }
        lastRead = true
        dropping = true
        last = requests
        return answers == requests ? .answerAndClose : .closeAfterAnswers
    }

    /// What `head` says about the connection (RFC 9112 §9.3; `CONNECT` and `Upgrade` because
    /// the proxy tunnels and upgrades nothing).
    static func continuation(_ head: HTTPRequestHead) -> Continuation {
        if head.method == .CONNECT || head.headers.contains(name: "Upgrade") { return .lastHead }
        return head.isKeepAlive ? .persistent : .last
    }
}

/// Sits right after NIO's HTTP/1 decoder and closes the connection as ``ConnectionPersistence``
/// decides, answering decoder failures itself (`431` for a head over the limit, `400` for any
/// other) in the registry's error format. It also tells the ``ConnectionGuard`` when each
/// request it sees starts and ends.
final class ConnectionPersistenceHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private var state = ConnectionPersistence()

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let action: ConnectionPersistence.Inbound
        switch unwrapInboundIn(data) {
        case .head(let head):
            action = state.requestHead(ConnectionPersistence.continuation(head))
            if action == .forward { context.triggerUserOutboundEvent(RequestActivity.started, promise: nil) }
        case .body:
            action = state.requestPart(isEnd: false)
        case .end:
            action = state.requestPart(isEnd: true)
        }
        if action == .forward { context.fireChannelRead(data) }
    }

    func read(context: ChannelHandlerContext) {
        // After its last request, nothing more is read from the connection: the decoder would
        // keep it all, unparsed.
        if state.readsMore { context.read() }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(var head) where head.status.code >= 200 && state.answerIsLast:
            head.headers.replaceOrAdd(name: "Connection", value: "close")
            context.write(wrapOutboundOut(.head(head)), promise: promise)
        case .end:
            let close = state.answerEnded()
            context.triggerUserOutboundEvent(RequestActivity.ended, promise: nil)
            guard close else {
                context.write(data, promise: promise)
                return
            }
            let written = context.eventLoop.makePromise(of: Void.self)
            written.futureResult.cascade(to: promise)
            context.writeAndFlush(data, promise: written)
            written.futureResult.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        default:
            context.write(data, promise: promise)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parserError = error as? HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        switch state.parseFailed() {
        case .answerAndClose:
            let answer =
                parserError == .headerOverflow
                ? RegistryErrorResponse(
                    HTTPResponseStatus(statusCode: 431, reasonPhrase: "Request Header Fields Too Large"), "UNSUPPORTED",
                    "the request head is larger than the proxy accepts")
                : RegistryErrorResponse(.badRequest, "UNSUPPORTED", "the request is not valid HTTP/1.1")
            var headers = answer.responseHeaders
            let body = context.channel.allocator.buffer(string: answer.json)
            headers.add(name: "Content-Length", value: "\(body.readableBytes)")
            headers.add(name: "Connection", value: "close")
            context.write(
                wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: answer.status, headers: headers))), promise: nil
            )
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        case .closeAfterAnswers:
            // The request being answered may be waiting for its body: it learns it will not come.
            context.fireErrorCaught(error)
        case .ignore:
            break
        }
    }
}
