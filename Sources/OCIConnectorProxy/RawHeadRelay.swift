import NIOCore
import OCIAuth
import OCIBlobForwarder
import OCIReference

/// Relays `HEAD`s of manifests and blobs, and `GET`s of manifests, as bytes, in front of NIO's
/// HTTP/1 decoder and encoder: the request's header lines go upstream as they came (less the
/// hop-by-hop ones and the client's `Authorization`), and the answer's go back the same way,
/// with a manifest's body as it came. Neither side's head is turned into `String`s and NIO's
/// header types, which for a manifest `HEAD` cost more than the rest of what the proxy does with
/// it (Documentation/Performance.md). `HEAD` is what container runtimes send most ("what digest
/// is this tag now?"), and a pull then `GET`s the manifests it names. The `/v2/` version check
/// clients send first is answered here as well, for a token that may ask it.
///
/// It takes only what it fully understands: a plain HTTP/1.1 `HEAD` of a manifest or a blob, or
/// `GET` of a manifest, whose proxy token allows pulling through the connector, when the
/// upstream's `Authorization` is at hand. A manifest body is held whole on its way through, up
/// to ``manifestBodyLimit``. Every other bodiless request is handed to the decoder as it came,
/// one at a time, and served as before (by ``ReadFastPath`` or the responder); bytes that follow
/// wait here until its answer is complete. At the first request with a body, or anything unusual
/// (a head ``HTTPHead`` does not scan, HTTP/1.0, `Connection`, `Upgrade`, `Expect`), the
/// connection's bytes all go to the decoder from then on, so that the two parsers never disagree
/// about where a request ends. An upstream answer this relay does not pass on as it is (a 401, a
/// redirect, one without `Content-Length`, a body longer than the limit, one with a `Location`
/// or `Link` to rewrite, or no answer at all) hands the request's own bytes to the decoder, for
/// ``ReadFastPath`` or marked for the responder, which do all of that.
final class RawHeadRelay: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    /// A `HEAD`, or a manifest `GET`, relayed here: where it goes and what its log line says.
    struct Plan {
        let upstream: ConnectorProxy.Upstream
        /// The upstream request's head, in bytes.
        let request: ByteBuffer
        let isBlob: Bool
        /// The largest answer body relayed here: 0 for a `HEAD`.
        let bodyLimit: Int
        /// `nil` when the access log is off (the log level is above `info`): a record costs
        /// three allocations and four locks, a few per cent of a relayed `HEAD`.
        let log: RequestLog?
    }

    /// What becomes of the upstream's answer.
    enum Answer {
        /// The client's answer, in bytes.
        case relay(ByteBuffer)
        /// For ``ReadFastPath``: a redirect (to object storage, which it follows), or a header
        /// to rewrite.
        case toFastPath
        /// For the responder: a 401 (the upstream token must be renewed), an answer without a
        /// length, or none at all (it explains what went wrong).
        case toResponder
    }

    /// What becomes of a request whose head was scanned.
    enum Decision {
        case relay(Plan)
        /// `/v2/` (or a connector's), for a token that may ask it: answered here at once.
        case versionCheck(isGet: Bool, log: RequestLog?)
        /// To the decoder, alone: this relay takes up the bytes after it once it is answered.
        case passOne
        /// To the decoder with everything after it, for good.
        case passAll
    }

    private enum Exchange {
        case none
        /// Relayed here; the request's bytes are kept to hand it on. The plan is kept here too,
        /// so that the upstream's callback captures only the handler (no context to allocate).
        case relaying(ByteBuffer, Plan)
        /// The decoder has the request.
        case passed
    }

    private let proxy: ConnectorProxy
    /// The handler after the decoder; told when a request handed on must skip its own fast path.
    private weak var back: ReadFastPath?
    private var context: ChannelHandlerContext?
    private var passingAll = false
    /// Bytes read and not yet handled: the start of the next request, or more.
    private var pending: ByteBuffer?
    /// The `Date` of the version checks answered here.
    private var date = HTTPDate.Cache()
    private var exchange = Exchange.none
    private var heldRead = false
    /// Whether bytes went to the decoder since the last `channelReadComplete` went on.
    private var passedSinceReadComplete = false
    /// The server asked to close idle connections while a `HEAD` was relayed here: passed on
    /// once its answer is written.
    private var heldQuiesce: Any?
    private var lastVerified: ClientAuthenticator.LastVerified?
    /// An answer was written while the client's connection was not writable: the next request
    /// waits until it is, so that a client that sends and does not read holds one answer here,
    /// not one per request.
    private var awaitingWritability = false

    /// The largest manifest body relayed as bytes, held whole between the two connections; a
    /// longer one (or one without `Content-Length`) goes to ``ReadFastPath``, which streams it.
    /// Manifests are mostly a few KiB; the distribution registry accepts up to 4 MiB.
    static let manifestBodyLimit = 64 * 1024

    init(proxy: ConnectorProxy, back: ReadFastPath) {
        self.proxy = proxy
        self.back = back
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if passingAll {
            context.fireChannelRead(data)
            return
        }
        var buffer = unwrapInboundIn(data)
        if pending == nil {
            pending = buffer
        } else {
            pending!.writeBuffer(&buffer)
        }
        if isIdle { takeUp(context: context) }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if passingAll || passedSinceReadComplete {
            passedSinceReadComplete = false
            context.fireChannelReadComplete()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        pending = nil
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // Hummingbird's connection state handler closes a connection it thinks idle at once:
        // it does not see the exchanges answered here.
        if event is ChannelShouldQuiesceEvent, !passingAll, case .relaying = exchange {
            heldQuiesce = event
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    // MARK: Outbound

    func read(context: ChannelHandlerContext) {
        // A request waiting for the one before it to be answered: no more until it is taken up.
        if !passingAll, !isIdle, let pending, pending.readableBytes > 0 {
            heldRead = true
        } else {
            context.read()
        }
    }

    private var isIdle: Bool {
        if case .none = exchange { !awaitingWritability } else { false }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if awaitingWritability, context.channel.isWritable {
            awaitingWritability = false
            takeUpOutsideRead(context: context)
        }
        context.fireChannelWritabilityChanged()
    }

    // MARK: Requests

    /// Handles the requests in `pending`, one at a time, while none is under way.
    private func takeUp(context: ChannelHandlerContext) {
        while !passingAll, isIdle, var buffer = pending, buffer.readableBytes > 0 {
            let scan = buffer.withUnsafeReadableBytes { HTTPHead.scan($0) }
            guard case .head(let head) = scan else {
                if case .unsupported = scan { passAll(context: context) }
                break  // `.incomplete`: more is to be read.
            }
            let decision = buffer.withUnsafeReadableBytes { bytes in
                proxy.rawHeadDecision(head, bytes, allocator: context.channel.allocator, lastVerified: &lastVerified)
            }
            if case .passAll = decision {
                passAll(context: context)
                break
            }
            let request = buffer.readSlice(length: head.length)!
            pending = buffer.readableBytes > 0 ? buffer : nil
            switch decision {
            case .relay(let plan):
                exchange = .relaying(request, plan)
                context.triggerUserOutboundEvent(RequestActivity.started, promise: nil)
                relay(plan, context: context)
            case .versionCheck(let isGet, let log):
                context.triggerUserOutboundEvent(RequestActivity.started, promise: nil)
                answerVersionCheck(isGet: isGet, log: log, context: context)
                context.triggerUserOutboundEvent(RequestActivity.ended, promise: nil)
            case .passOne, .passAll:
                exchange = .passed
                passOn(request, context: context)
            }
        }
        if heldRead, isIdle || (pending?.readableBytes ?? 0) == 0 {
            heldRead = false
            context.read()
        }
    }

    private func passOn(_ bytes: ByteBuffer, context: ChannelHandlerContext) {
        passedSinceReadComplete = true
        context.fireChannelRead(wrapInboundOut(bytes))
    }

    /// From now on every byte goes to the decoder, starting with what waited here.
    private func passAll(context: ChannelHandlerContext) {
        passingAll = true
        if let pending, pending.readableBytes > 0 { passOn(pending, context: context) }
        pending = nil
        if heldRead {
            heldRead = false
            context.read()
        }
    }

    /// The request handed to the decoder is answered (called by ``ReadFastPath``, possibly
    /// inside the responder's write of its answer): the requests that waited are taken up on
    /// the next turn of the event loop.
    func exchangeEnded() {
        guard !passingAll, case .passed = exchange, let context else { return }
        exchange = .none
        context.eventLoop.assumeIsolated().execute { [self] in
            guard let context = self.context, context.channel.isActive, isIdle else { return }
            takeUpOutsideRead(context: context)
        }
    }

    /// ``takeUp(context:)`` when no read is under way (an answer arrived, the connection became
    /// writable): what it hands to the decoder is processed as at the end of a read.
    private func takeUpOutsideRead(context: ChannelHandlerContext) {
        takeUp(context: context)
        finishRead(context: context)
    }

    /// Outside a read: what went to the decoder is processed at the end of a read.
    private func finishRead(context: ChannelHandlerContext) {
        if passedSinceReadComplete {
            passedSinceReadComplete = false
            context.fireChannelReadComplete()
        }
    }

    // MARK: Answered here

    /// The version check's answer up to its `Date`, as ``ReadFastPath`` and the responder write
    /// it: the same fields in the same order.
    private static let versionCheckHead: String = {
        var head = "HTTP/1.1 200 OK\r\n"
        for field in ConnectorProxy.versionCheckFields { head += "\(field.name.rawName): \(field.value)\r\n" }
        return head + "Content-Length: \(ConnectorProxy.versionCheckBody.utf8.count)\r\nDate: "
    }()

    /// Answers `/v2/`, the check clients send before each pull or push, without a round trip
    /// through NIO's HTTP/1 decoder and encoder (which cost it about as much again).
    private func answerVersionCheck(isGet: Bool, log: RequestLog?, context: ChannelHandlerContext) {
        var answer = context.channel.allocator.buffer(capacity: 192)
        answer.writeString(Self.versionCheckHead)
        answer.writeString(date.now())
        answer.writeStaticString("\r\n\r\n")
        if isGet {
            answer.writeString(ConnectorProxy.versionCheckBody)
            log?.bytesOut.add(ConnectorProxy.versionCheckBody.utf8.count)
        }
        log?.finish(status: 200)
        context.writeAndFlush(wrapOutboundOut(.byteBuffer(answer)), promise: nil)
        if !context.channel.isWritable { awaitingWritability = true }
    }

    // MARK: Relaying

    private func relay(_ plan: Plan, context: ChannelHandlerContext) {
        plan.upstream.reads.startRawHead(plan.request, on: context.eventLoop, bodyLimit: plan.bodyLimit) { [self] result in
            answered(result)
        }
    }

    private func answered(_ result: Result<RawResponseHead, any Error>) {
        guard case .relaying(let request, let plan) = exchange else { return }
        guard let context, context.channel.isActive else {
            plan.log?.finish(status: 499, detail: "the client closed the connection")
            return
        }
        guard case .success(let response) = result else {
            handOn(request, toResponder: true, context: context)
            return
        }
        let answer = response.bytes.withUnsafeReadableBytes { Self.answer(response, $0, allocator: context.channel.allocator) }
        guard case .relay(let answer) = answer else {
            if plan.isBlob, (300..<400).contains(response.status) {
                // Blobs on object storage: every blob `HEAD` is redirected, and the fast path
                // behind follows redirects itself.
                plan.upstream.redirectsBlobHeads.set()
            }
            let toResponder = if case .toResponder = answer { true } else { false }
            handOn(request, toResponder: toResponder, context: context)
            return
        }
        exchange = .none
        context.triggerUserOutboundEvent(RequestActivity.ended, promise: nil)
        plan.log?.bytesOut.add(response.body?.readableBytes ?? 0)
        plan.log?.finish(status: response.status)
        if let event = heldQuiesce {
            heldQuiesce = nil
            // The connection closes now; closing fails writes still pending, so the event waits
            // for this one.
            pending = nil
            let written = context.eventLoop.makePromise(of: Void.self)
            context.writeAndFlush(wrapOutboundOut(.byteBuffer(answer)), promise: written)
            written.futureResult.assumeIsolated().whenComplete { _ in context.fireUserInboundEventTriggered(event) }
            return
        }
        context.writeAndFlush(wrapOutboundOut(.byteBuffer(answer)), promise: nil)
        guard context.channel.isWritable else {
            awaitingWritability = true
            return
        }
        takeUpOutsideRead(context: context)
    }

    /// Gives the request to the decoder, as if it had just arrived: for ``ReadFastPath`` or,
    /// skipping it, for the responder.
    private func handOn(_ request: ByteBuffer, toResponder: Bool, context: ChannelHandlerContext) {
        exchange = .passed
        // The decoder's side tells the guard when it starts and ends the request again.
        context.triggerUserOutboundEvent(RequestActivity.ended, promise: nil)
        if toResponder { back?.passNextOn() }
        passOn(request, context: context)
        finishRead(context: context)
        if let event = heldQuiesce {
            heldQuiesce = nil
            context.fireUserInboundEventTriggered(event)
        }
    }

    /// The client's answer: the upstream's status line and header lines, less those withheld
    /// from clients (its `Content-Length` stays), then the body if any, unless
    /// the answer is one to hand on.
    static func answer(_ response: RawResponseHead, _ bytes: UnsafeRawBufferPointer, allocator: ByteBufferAllocator) -> Answer {
        let head = response.head
        if response.status == 401 { return .toResponder }
        if (300..<400).contains(response.status) { return .toFastPath }
        // A body not taken whole (too long, or not framed by its length): streamed behind.
        guard var body = response.body else { return .toFastPath }
        var hasLength = false
        for field in head.fields {
            if head.name(of: field, in: bytes, is: "content-length") {
                hasLength = true
            } else if head.name(of: field, in: bytes, is: "location") || head.name(of: field, in: bytes, is: "link") {
                return .toFastPath
            }
        }
        guard hasLength else { return .toResponder }
        var answer = allocator.buffer(capacity: head.length + body.readableBytes)
        // `HTTP/1.1`, whatever the upstream spoke, then its status code and reason as they came.
        answer.writeStaticString("HTTP/1.1")
        answer.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[head.startLine.lowerBound + 8..<head.startLine.upperBound]))
        answer.writeStaticString("\r\n")
        for field in head.fields {
            if head.name(of: field, in: bytes, is: "content-length") {
                // Kept: it frames the body that follows.
            } else if HTTPHead.isWithheldFromClient(name: UnsafeRawBufferPointer(rebasing: bytes[field.name])) {
                continue
            }
            answer.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[field.line]))
        }
        answer.writeStaticString("\r\n")
        answer.writeBuffer(&body)
        return .relay(answer)
    }
}

extension RegistryEndpoint {
    fileprivate var isBlob: Bool {
        if case .blob = self { true } else { false }
    }
}

extension ConnectorProxy {
    /// What ``RawHeadRelay`` does with the request whose head is `head`, at the start of
    /// `bytes`.
    func rawHeadDecision(
        _ head: HTTPHead, _ bytes: UnsafeRawBufferPointer, allocator: ByteBufferAllocator,
        lastVerified: inout ClientAuthenticator.LastVerified?
    ) -> RawHeadRelay.Decision {
        func text(_ range: Range<Int>) -> String { String(decoding: UnsafeRawBufferPointer(rebasing: bytes[range]), as: UTF8.self) }
        // METHOD SP target SP HTTP/1.1
        let line = head.startLine
        guard let firstSpace = line.first(where: { bytes[$0] == UInt8(ascii: " ") }),
              line.count > 9, bytes[line.upperBound - 9] == UInt8(ascii: " "),
              HTTPHead.equals(bytes, line.upperBound - 8..<line.upperBound, "HTTP/1.1"),
              firstSpace < line.upperBound - 9
        else { return .passAll }
        let method = line.lowerBound..<firstSpace
        let target = firstSpace + 1..<line.upperBound - 9
        var host: HTTPHead.Field?
        var authorization: HTTPHead.Field?
        var repeated = false
        for field in head.fields {
            switch field.name.count {
            case 14 where head.name(of: field, in: bytes, is: "content-length"):
                if !HTTPHead.equals(bytes, field.value, "0") { return .passAll }
            case 17 where head.name(of: field, in: bytes, is: "transfer-encoding"),
                 10 where head.name(of: field, in: bytes, is: "connection"),
                 7 where head.name(of: field, in: bytes, is: "upgrade"),
                 6 where head.name(of: field, in: bytes, is: "expect"):
                return .passAll
            case 4 where head.name(of: field, in: bytes, is: "host"):
                repeated = repeated || host != nil
                host = field
            case 13 where head.name(of: field, in: bytes, is: "authorization"):
                repeated = repeated || authorization != nil
                authorization = field
            default:
                break
            }
        }
        let isGet = HTTPHead.equals(bytes, method, "GET")
        let methodName = isGet ? "GET" : "HEAD"
        guard isGet || HTTPHead.equals(bytes, method, "HEAD"), !repeated, bytes[target.lowerBound] == UInt8(ascii: "/"),
              !target.contains(where: { bytes[$0] == UInt8(ascii: "?") || bytes[$0] == UInt8(ascii: "%") })
        else { return .passOne }

        let hostName = host.map { text($0.value) } ?? "localhost"
        // A connection sends the same `Authorization` with every request: when it is the one
        // verified last, that `String` serves, and none is made from the bytes.
        let authorizationValue = authorization.map { field in
            if let last = lastVerified, Self.equals(bytes, field.value, last.header) { return last.header }
            return text(field.value)
        }
        guard let destination = try? destination(host: hostName, path: text(target)) else { return .passOne }
        if destination.route == .base {
            return versionCheckDecision(destination, authorization: authorizationValue, isGet: isGet, lastVerified: &lastVerified)
        }
        guard let (upstream, repository, endpoint) = allowedRead(
                  destination, authorization: authorizationValue, lastVerified: &lastVerified),
              Self.isRawEndpoint(endpoint, upstream: upstream, get: isGet),
              let upstreamAuthorization = upstream.client.readyAuthorization(
                  for: ScopeHints.scopes(method: methodName, route: destination.route, mountFrom: nil))
        else { return .passOne }

        var request = allocator.buffer(capacity: head.length + 128 + (upstreamAuthorization.headerValue?.utf8.count ?? 0))
        if isGet { request.writeStaticString("GET ") } else { request.writeStaticString("HEAD ") }
        Self.writeUpstreamPath(destination.route, to: &request)
        request.writeStaticString(" HTTP/1.1\r\nHost: ")
        request.writeString(upstream.reads.hostHeader)
        request.writeStaticString("\r\n")
        for field in head.fields where !head.isHopByHop(field, in: bytes) {
            request.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[field.line]))
        }
        if let value = upstreamAuthorization.headerValue {
            request.writeStaticString("Authorization: ")
            request.writeString(value)
            request.writeStaticString("\r\n")
        }
        request.writeStaticString("\r\n")
        let log = logger.logLevel <= .info
            ? readLog(methodName, upstream: upstream, repository: repository, endpoint: endpoint) : nil
        return .relay(RawHeadRelay.Plan(upstream: upstream, request: request, isBlob: endpoint.isBlob,
                                        bodyLimit: isGet ? RawHeadRelay.manifestBodyLimit : 0, log: log))
    }

    /// `/v2/`, or a connector's `/v2/` in either form, answered by ``RawHeadRelay`` when the token
    /// verifies and may pull through the connector named; anything else (no token, one that
    /// does not verify or allow it) goes to the responder, which explains the refusal.
    private func versionCheckDecision(
        _ destination: Destination, authorization: String?, isGet: Bool, lastVerified: inout ClientAuthenticator.LastVerified?
    ) -> RawHeadRelay.Decision {
        guard allowsVersionCheck(destination, authorization: authorization, lastVerified: &lastVerified) else { return .passOne }
        let log = logger.logLevel <= .info ? versionCheckLog(method: isGet ? "GET" : "HEAD", destination: destination) : nil
        return .versionCheck(isGet: isGet, log: log)
    }

    /// ``upstreamPath(_:)``, written into `buffer` without making a `String` of it first.
    static func writeUpstreamPath(_ route: RegistryRoute, to buffer: inout ByteBuffer) {
        guard case .repository(let name, let endpoint) = route else {
            buffer.writeString(upstreamPath(route))
            return
        }
        buffer.writeStaticString("/v2/")
        buffer.writeString(name)
        switch endpoint {
        case .manifest(.tag(let tag)):
            buffer.writeStaticString("/manifests/")
            buffer.writeString(tag)
        case .manifest(.digest(let digest)):
            buffer.writeStaticString("/manifests/")
            buffer.writeString(digest.string)
        case .blob(let digest):
            buffer.writeStaticString("/blobs/")
            buffer.writeString(digest.string)
        default:
            buffer.writeStaticString("/")
            buffer.writeString(endpoint.path)
        }
    }

    /// Whether `bytes[range]` are the UTF-8 of `text`.
    private static func equals(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>, _ text: String) -> Bool {
        text.utf8.withContiguousStorageIfAvailable { HTTPHead.equals(bytes, range, UnsafeRawBufferPointer($0)) }
            ?? text.utf8.elementsEqual(bytes[range])
    }

    /// A manifest; for a `HEAD` also a blob, unless the upstream redirects blob reads (to object
    /// storage, which ``ReadFastPath`` follows, or back to itself, which the responder does).
    /// A blob `GET` is streamed by ``ReadFastPath``.
    private static func isRawEndpoint(_ endpoint: RegistryEndpoint, upstream: Upstream, get: Bool) -> Bool {
        switch endpoint {
        case .manifest: true
        case .blob: !get && !upstream.handsOnRedirects.isSet && !upstream.redirectsBlobHeads.isSet
        default: false
        }
    }
}
