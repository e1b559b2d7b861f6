import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypesHTTP1
import OCIAuth
import OCIBlobForwarder
import OCIReference

/// Answers `HEAD` and `GET` of manifests, blobs, tag lists and referrers (their first page:
/// queries go to the responder) on the connection's event loop, without a task per request, and
/// the `/v2/` version check for a valid token; every other request, and every read it cannot
/// finish on its own, goes on to the ``ConnectorProxy`` responder as before.
///
/// `HEAD` and `GET` of a manifest are what container runtimes send most ("what digest is this tag
/// now?", then the manifest itself), and through the responder each cost three to four times
/// nginx's CPU (Performance.md); a blob relayed here costs a sixth less CPU per GiB, with no task
/// switch per buffer. A read is served here when its proxy token is valid and allows pulling.
/// When the upstream's `Authorization` is not at hand (a connector's first read, or a token to
/// fetch or renew for the read's scope), the read waits for it here, without holding a thread,
/// and answers as the responder would if it cannot be had. A redirect to another origin
/// (object storage, where registries keep blobs) is followed here too, without credentials, on
/// a ``StorageFetchers`` connection. The upstream's answer is relayed unless it is a 401 (the
/// token must be renewed), a redirect back to the upstream's origin or a second one, or a
/// `HEAD` answer without a length; then the request is handed to the responder, which does all
/// of that. A read changes nothing upstream, so sending it twice is harmless; an upstream whose
/// redirects had to be handed on has its later blob reads sent to the responder directly.
///
/// A body is written to the client as it is read from the upstream connection, which is on the
/// same event loop; when the client's connection stops being writable, reading the upstream
/// pauses until it is writable again.
///
/// Requests on one connection are answered in order: while an exchange is under way, requests
/// that follow it wait here (and reading pauses) until its response is complete.
final class ReadFastPath: ChannelDuplexHandler, RemovableChannelHandler {
    // NIO's HTTP/1 parts, before Hummingbird converts them to `HTTPTypes`: what this handler
    // answers needs no conversion either way.
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// What a read served here needs.
    struct Plan {
        let method: NIOHTTP1.HTTPMethod
        let upstream: ConnectorProxy.Upstream
        let target: String
        /// The client's headers that go upstream, without the upstream's `Authorization`.
        let headers: HTTPHeaders
        let authorization: UpstreamAuthorization
        let isBlob: Bool
        let host: String
        let prefix: String
        let log: RequestLog
    }

    /// What this handler does with a request it answers itself.
    enum Work {
        /// Relays a read of a manifest, a blob, a tag list or referrers.
        case read(Plan)
        /// Answers the `/v2/` version check, logging it here.
        case versionCheck(RequestLog)
    }

    /// The upstream's `Authorization` for a read: at hand, or to be asked for (a token request,
    /// or finding out how the upstream authenticates) for these scopes.
    enum UpstreamAuthorization {
        case ready(UpstreamClient.Authorization)
        case pending(ScopeSet)
    }

    private enum Exchange {
        case none
        /// The responder has the request.
        case passed
        /// This handler serves it; the head is kept to hand it on if needed.
        case serving(HTTPRequestHead)
    }

    /// The body being relayed to the client, with what the log line needs at its end.
    private struct Relaying {
        let body: RelayedBody
        let status: Int
        let log: RequestLog
    }

    private let proxy: ConnectorProxy
    private var exchange = Exchange.none
    private var requestEnded = false
    private var responseEnded = false
    /// Parts of requests that came while an exchange was under way.
    private var waiting = CircularBuffer<HTTPServerRequestPart>()
    private var heldRead = false
    private var relaying: Relaying?
    private var context: ChannelHandlerContext?
    /// The server asked to close idle connections (graceful shutdown) while this handler served
    /// a request: passed on once the response is complete, as if the request had just ended.
    private var heldQuiesce: Any?
    /// When a quiesce event is held: the write of the response's end.
    private var endWritten: EventLoopFuture<Void>?
    /// Whether parts were passed on since the last `channelReadComplete` went on: after a read
    /// that was all answered here, it would only wake Hummingbird's handlers for nothing.
    private var passedOnSinceReadComplete = false
    /// The `Date` of answers written here.
    private var date = HTTPDate.Cache()
    /// The proxy token this connection's last request verified with.
    private var lastVerified: ClientAuthenticator.LastVerified?
    /// The relay in front of the decoder, told when each exchange is complete.
    weak var front: RawHeadRelay?
    /// The next request was handed on by the ``RawHeadRelay``: it goes to the responder.
    private var nextToResponder = false

    init(proxy: ConnectorProxy) {
        self.proxy = proxy
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if waiting.isEmpty, accepts(part) {
            process(part, context: context)
        } else {
            waiting.append(part)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        guard passedOnSinceReadComplete else { return }
        fireReadComplete(context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        waiting.removeAll()
        if let relaying {
            self.relaying = nil
            relaying.body.drop()
            relaying.log.finish(status: relaying.status, detail: "aborted: the client closed the connection")
        }
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, let relaying {
            relaying.body.resume()
        }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // Hummingbird's connection state handler, further on, closes a connection it thinks
        // idle at once: it does not see the exchanges answered here.
        if event is ChannelShouldQuiesceEvent, case .serving = exchange {
            heldQuiesce = event
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// A part belongs to the current exchange, or starts one when none is under way.
    private func accepts(_ part: HTTPServerRequestPart) -> Bool {
        if case .none = exchange { return true }
        return !requestEnded
    }

    private func process(_ part: HTTPServerRequestPart, context: ChannelHandlerContext) {
        switch (part, exchange) {
        case (.head(let request), .none):
            requestEnded = false
            responseEnded = false
            if nextToResponder {
                nextToResponder = false
                exchange = .passed
                passOn(part, context: context)
                return
            }
            switch proxy.fastPathWork(for: request, lastVerified: &lastVerified) {
            case .read(let plan):
                exchange = .serving(request)
                serve(plan, context: context)
            case .versionCheck(let log):
                exchange = .serving(request)
                answerVersionCheck(request.method, log: log, context: context)
            case nil:
                exchange = .passed
                passOn(part, context: context)
            }
        case (.end, .serving):
            requestEnded = true
            finishIfDone(context: context)
        case (.body, .serving):
            break  // A read has no body to speak of.
        case (.end, .passed):
            requestEnded = true
            passOn(part, context: context)
            finishIfDone(context: context)
        default:
            passOn(part, context: context)
        }
    }

    /// The next request comes from the ``RawHeadRelay``, which could not finish it: it is the
    /// responder's.
    func passNextOn() {
        nextToResponder = true
    }

    private func passOn(_ part: HTTPServerRequestPart, context: ChannelHandlerContext) {
        passedOnSinceReadComplete = true
        context.fireChannelRead(wrapInboundOut(part))
    }

    private func fireReadComplete(context: ChannelHandlerContext) {
        passedOnSinceReadComplete = false
        context.fireChannelReadComplete()
    }

    // MARK: Outbound

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data), case .passed = exchange {
            responseEnded = true
            if heldQuiesce != nil {
                // The responder flushes after its end: the held event must wait for that write,
                // or the connection closes with the whole response unsent.
                let written = context.eventLoop.makePromise(of: Void.self)
                written.futureResult.cascade(to: promise)
                context.write(data, promise: written)
                endWritten = written.futureResult
            } else {
                context.write(data, promise: promise)
            }
            finishIfDone(context: context)
            return
        }
        context.write(data, promise: promise)
    }

    func read(context: ChannelHandlerContext) {
        if waiting.isEmpty {
            context.read()
        } else {
            heldRead = true
        }
    }

    // MARK: Serving

    private func serve(_ plan: Plan, context: ChannelHandlerContext) {
        switch plan.authorization {
        case .ready(let authorization):
            send(plan, authorization, context: context)
        case .pending(let scopes):
            // Concurrent first reads of a scope share one token request (the token cache's), and
            // each goes on here once it has the token, as reads with the token at hand do.
            let client = plan.upstream.client
            context.eventLoop.makeFutureWithTask { try await client.authorization(for: scopes) }
                .assumeIsolated()
                .whenComplete { [self] result in
                    guard case .serving = exchange else { return }
                    guard context.channel.isActive else {
                        plan.log.finish(status: 499, detail: "the client closed the connection")
                        return
                    }
                    switch result {
                    case .success(let authorization):
                        send(plan, authorization, context: context)
                    case .failure(let error):
                        // What the responder answers when it cannot get the upstream's
                        // authorization; handing the request on would ask for it a second time.
                        let refusal = (error as? AuthError).map { plan.upstream.failure($0, scopes: scopes) }
                        answer(refusal ?? plan.upstream.unavailable("\(error)"), plan: plan, context: context)
                    }
                }
        }
    }

    /// Sends the read upstream with `authorization` and relays the answer, or hands the request
    /// on when the answer needs the responder.
    private func send(_ plan: Plan, _ authorization: UpstreamClient.Authorization, context: ChannelHandlerContext) {
        var upstreamHeaders = plan.headers
        authorization.apply(to: &upstreamHeaders)
        plan.upstream.reads.startRelay(plan.method, plan.target, headers: upstreamHeaders, on: context.eventLoop)
            .assumeIsolated()
            .whenComplete { [self] result in
                relayAnswer(result, plan: plan, fromStorage: false, context: context)
            }
    }

    /// Relays the upstream's (or, after a redirect, the storage's) answer to the client; follows
    /// the upstream's redirect to another origin here, and hands the request on for whatever
    /// else needs the responder.
    private func relayAnswer(_ result: Result<RelayedResponse, any Error>, plan: Plan, fromStorage: Bool, context: ChannelHandlerContext) {
        guard case .serving(let request) = exchange else {
            if case .success(let response) = result { response.body.drop() }
            return
        }
        guard context.channel.isActive else {
            if case .success(let response) = result { response.body.drop() }
            plan.log.finish(status: 499, detail: "the client closed the connection")
            return
        }
        guard case .success(let response) = result else {
            handOn(request, context: context)
            return
        }
        let status = response.head.status
        let length = response.head.headers.first(name: "Content-Length")
        let redirect = (300..<400).contains(status.code) && !plan.upstream.passRedirects
        // Object storage: the signed URL is the authorization, so the read goes there
        // without credentials, from here. Redirects back to the upstream's own origin (they
        // carry its credentials) and further redirects are the responder's.
        if redirect, !fromStorage, let location = response.head.headers.first(name: "Location"),
           !location.hasPrefix(plan.upstream.client.connector.address.baseURL + "/"),
           let (storage, target) = plan.upstream.storage.fetcher(for: location) {
            response.body.relay(to: Discard(body: response.body))
            storage.startRelay(plan.method, target, headers: plan.headers, on: context.eventLoop)
                .assumeIsolated()
                .whenComplete { [self] result in
                    relayAnswer(result, plan: plan, fromStorage: true, context: context)
                }
            return
        }
        if status == .unauthorized, fromStorage {
            // Object storage refusing its own signed URL: nothing the client could fix.
            response.body.relay(to: Discard(body: response.body))
            answer(plan.upstream.unavailable("the storage the upstream redirected to refused the read (401)"), plan: plan, context: context)
            return
        }
        guard status != .unauthorized || fromStorage, !redirect, length != nil || plan.method != .HEAD else {
            if redirect, plan.isBlob { plan.upstream.handsOnRedirects.set() }
            response.body.relay(to: Discard(body: response.body))
            handOn(request, context: context)
            return
        }
        var headers = HTTPHeaders()
        headers.reserveCapacity(response.head.headers.count)  // All but hop-by-hop ones, and a length.
        ConnectorProxy.forEachClientHeader(response.head.headers, host: plan.host, prefix: plan.prefix, upstream: plan.upstream) {
            headers.add(name: $0, value: $1)
        }
        if let length { headers.add(name: "Content-Length", value: length) }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        relaying = Relaying(body: response.body, status: Int(status.code), log: plan.log)
        response.body.relay(to: self)
    }

    /// Answers with a registry error (its JSON body left out for `HEAD`).
    private func answer(_ error: RegistryErrorResponse, plan: Plan, context: ChannelHandlerContext) {
        answer(status: Int(error.status.code), fields: error.responseHeaders, body: error.json, method: plan.method,
               log: plan.log, detail: error.code, context: context)
    }

    /// Answers `/v2/` as the responder's ``ConnectorProxy/versionCheck()`` does.
    private func answerVersionCheck(_ method: NIOHTTP1.HTTPMethod, log: RequestLog, context: ChannelHandlerContext) {
        if method != .HEAD { log.bytesOut.add(ConnectorProxy.versionCheckBody.utf8.count) }
        answer(status: 200, fields: ConnectorProxy.versionCheckFields, body: ConnectorProxy.versionCheckBody, method: method,
               log: log, detail: nil, context: context)
    }

    /// Writes a whole answer of the proxy's own, dated as Hummingbird dates the responder's.
    private func answer(
        status: Int, fields: HTTPFields, body text: String, method: NIOHTTP1.HTTPMethod, log: RequestLog, detail: String?,
        context: ChannelHandlerContext
    ) {
        let body = ByteBuffer(string: text)
        var headers = HTTPHeaders()
        for field in fields { headers.add(name: field.name.rawName, value: field.value) }
        headers.add(name: "Content-Length", value: "\(body.readableBytes)")
        headers.add(name: "Date", value: date.now())
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .init(statusCode: status), headers: headers))),
                      promise: nil)
        if method != .HEAD { context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil) }
        writeEnd(context: context)
        log.finish(status: status, detail: detail)
        responseEnded = true
        finishIfDone(context: context)
    }

    /// Gives the request to the responder, as if it had just arrived.
    private func handOn(_ request: HTTPRequestHead, context: ChannelHandlerContext) {
        exchange = .passed
        passOn(.head(request), context: context)
        if requestEnded {
            passOn(.end(nil), context: context)
        }
        // Hummingbird takes what was read at the end of a read.
        fireReadComplete(context: context)
    }

    /// After a complete exchange, the requests that waited are taken up: on the next turn of the
    /// event loop, since this may run inside the responder's write of its response.
    private func finishIfDone(context: ChannelHandlerContext) {
        guard requestEnded, responseEnded else { return }
        exchange = .none
        if let event = heldQuiesce {
            heldQuiesce = nil
            // The connection closes now, so requests that waited are not taken up. Closing fails
            // writes still pending: the event waits for the response's end to be written.
            waiting.removeAll()
            heldRead = false
            if let written = endWritten {
                endWritten = nil
                written.assumeIsolated().whenComplete { _ in context.fireUserInboundEventTriggered(event) }
            } else {
                context.fireUserInboundEventTriggered(event)
            }
            return
        }
        endWritten = nil
        front?.exchangeEnded()
        guard !waiting.isEmpty || heldRead else { return }
        context.eventLoop.assumeIsolated().execute { [self] in
            guard case .none = exchange, context.channel.isActive else { return }
            while let part = waiting.first, accepts(part) {
                waiting.removeFirst()
                process(part, context: context)
            }
            // Hummingbird takes what was read at the end of a read.
            if passedOnSinceReadComplete { fireReadComplete(context: context) }
            if waiting.isEmpty, heldRead {
                heldRead = false
                context.read()
            }
        }
    }
}

extension ReadFastPath: BlobBodySink {
    func bodyPart(_ buffer: ByteBuffer) -> Bool {
        guard let context, let relaying else { return false }
        relaying.log.bytesOut.add(buffer.readableBytes)
        context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        return context.channel.isWritable
    }

    func bodyEnded(_ error: BlobFetchError?) {
        guard let context, let relaying else { return }
        self.relaying = nil
        if let error {
            // The client has part of the body and no way to learn it is cut short but this.
            relaying.log.finish(status: relaying.status, detail: "aborted: \(error.kind)")
            context.close(promise: nil)
            return
        }
        writeEnd(context: context)
        relaying.log.finish(status: relaying.status)
        responseEnded = true
        finishIfDone(context: context)
    }

    /// Writes the end of a response; while a quiesce event is held, it waits for that write.
    fileprivate func writeEnd(context: ChannelHandlerContext) {
        if heldQuiesce != nil {
            let written = context.eventLoop.makePromise(of: Void.self)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: written)
            endWritten = written.futureResult
        } else {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }
}

/// Reads and drops a small body (an error or a redirect), up to ``ConnectorProxy/drainLimit``,
/// so its connection can be reused.
private final class Discard: BlobBodySink {
    private let body: RelayedBody
    private var seen = 0

    init(body: RelayedBody) {
        self.body = body
    }

    func bodyPart(_ buffer: ByteBuffer) -> Bool {
        seen += buffer.readableBytes
        if seen > ConnectorProxy.drainLimit { body.drop() }
        return true
    }

    func bodyEnded(_ error: BlobFetchError?) {}
}

extension ConnectorProxy {
    /// What ``ReadFastPath`` does with `request` itself, or `nil` when the responder must answer
    /// it: it is not a plain HTTP/1.1 keep-alive `HEAD` or `GET` (no query, no escapes) of a
    /// manifest, a blob, a tag list, referrers or `/v2/`, its token is missing or does not allow
    /// pulling through the connector (the responder explains why), or it is a blob read from an
    /// upstream whose redirects the responder has to follow.
    func fastPathWork(for request: HTTPRequestHead, lastVerified: inout ClientAuthenticator.LastVerified?) -> ReadFastPath.Work? {
        guard request.method == .HEAD || request.method == .GET,
              // Anything but a plain HTTP/1.1 keep-alive exchange is for Hummingbird to handle.
              request.version == .http1_1, !request.headers.contains(name: "Connection"),
              !request.uri.utf8.contains(where: { $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "%") })
        else { return nil }
        let host = request.headers.first(name: "Host") ?? "localhost"
        guard let destination = try? destination(host: host, path: request.uri) else { return nil }
        switch destination.route {
        case .repository(_, .manifest), .repository(_, .blob), .repository(_, .tagList), .repository(_, .referrers):
            return readPlan(for: request, host: host, destination: destination, lastVerified: &lastVerified).map { .read($0) }
        case .base:
            let authorization = request.headers.first(name: "Authorization")
            guard allowsVersionCheck(destination, authorization: authorization, lastVerified: &lastVerified) else { return nil }
            return .versionCheck(versionCheckLog(method: request.method.rawValue, destination: destination))
        default:
            return nil
        }
    }

    /// The upstream, repository and endpoint of a read of `destination` whose proxy token (in the
    /// `Authorization` value) allows pulling through the connector named; `nil` for the
    /// responder, which explains a refusal. Both read paths on the event loop check this.
    func allowedRead(
        _ destination: Destination, authorization: String?, lastVerified: inout ClientAuthenticator.LastVerified?
    ) -> (Upstream, String, RegistryEndpoint)? {
        guard let connector = destination.connector, case .repository(let repository, let endpoint) = destination.route,
              let upstream = upstreams[connector],
              let claims = try? authenticator.claims(authorization: authorization, last: &lastVerified),
              claims.allows(connector: upstream.name, action: "pull", repository: repository) else { return nil }
        return (upstream, repository, endpoint)
    }

    /// The log of a read served on the event loop.
    func readLog(_ method: String, upstream: Upstream, repository: String, endpoint: RegistryEndpoint) -> RequestLog {
        let log = RequestLog(logger: logger, method: method)
        log.connector = upstream.name
        log.repository = repository
        log.endpoint = endpoint.path
        return log
    }

    /// The plan for a read of a repository's manifest, blob, tag list or referrers.
    private func readPlan(
        for request: HTTPRequestHead, host: String, destination: Destination, lastVerified: inout ClientAuthenticator.LastVerified?
    ) -> ReadFastPath.Plan? {
        guard let (upstream, repository, endpoint) = allowedRead(
            destination, authorization: request.headers.first(name: "Authorization"), lastVerified: &lastVerified) else { return nil }
        let isBlob = if case .blob = endpoint { true } else { false }
        if isBlob, upstream.handsOnRedirects.isSet { return nil }
        let scopes = { ScopeHints.scopes(method: request.method.rawValue, route: destination.route, mountFrom: nil) }
        let authorization: ReadFastPath.UpstreamAuthorization = upstream.client.readyAuthorization(for: scopes()).map { .ready($0) }
            ?? .pending(scopes())
        let headers = Self.forwardableHeaders(request.headers)
        let log = readLog(request.method.rawValue, upstream: upstream, repository: repository, endpoint: endpoint)
        return ReadFastPath.Plan(method: request.method, upstream: upstream, target: Self.upstreamPath(destination.route),
                                 headers: headers, authorization: authorization, isBlob: isBlob, host: host,
                                 prefix: destination.inPath ? upstream.pathPrefix : "", log: log)
    }

    /// Whether `/v2/` (or a connector's `/v2/`, in either form), the version check clients send
    /// before a pull or a push, is answered on the event loop as the responder would answer it:
    /// for a valid token that may pull through the connector named, if any.
    func allowsVersionCheck(
        _ destination: Destination, authorization: String?, lastVerified: inout ClientAuthenticator.LastVerified?
    ) -> Bool {
        guard let claims = try? authenticator.claims(authorization: authorization, last: &lastVerified) else { return false }
        if let connector = destination.connector {
            guard claims.allows(connector: connector.description, action: "pull", repository: nil),
                  upstreams[connector] != nil else { return false }
        }
        return true
    }

    /// The log of a version check answered on the event loop.
    func versionCheckLog(method: String, destination: Destination) -> RequestLog {
        let log = RequestLog(logger: logger, method: method)
        log.connector = destination.connector?.description
        log.endpoint = "/"
        return log
    }

    /// Hummingbird's HTTP/1 channel with ``ReadFastPath`` right after NIO's request decoder, and
    /// a shallower buffer of request parts.
    struct ServerChannel: ServerChildChannel {
        let base: HTTP1Channel
        let proxy: ConnectorProxy

        /// Request parts read ahead of the responder. Hummingbird keeps up to ten, each a read of
        /// up to 256 KiB (``ReceiveBufferHandler``); a push waiting on a slower registry held
        /// them all. Two keep the upload streaming: 16 concurrent pushes peaked at 50–64 MiB of
        /// heap instead of 72–82, at the same speed within the noise (Performance.md).
        static let requestPartsAhead = NIOAsyncSequenceProducerBackPressureStrategies.HighLowWatermark(
            lowWatermark: 1, highWatermark: 2)

        /// What `HTTP1Channel.setup` does with the proxy's configuration, plus the two changes.
        func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<HTTP1Channel.Value> {
            channel.eventLoop.makeCompletedFuture { [proxy] in
                let operations = channel.pipeline.syncOperations
                let configuration = base.configuration
                let connectionLimits = proxy.configuration.connections
                let limits = connectionLimits.decoderLimits(
                    field: configuration.httpDecoder.maxHeaderFieldSize, list: configuration.httpDecoder.maxHeaderListSize,
                    count: configuration.httpDecoder.maxHeaderFieldCount)
                // As Hummingbird does: HTTP/1 pipelining is handled by the async channel, errors by
                // the application, and header validation by `HTTPTypes`.
                try operations.configureHTTPServerPipeline(
                    withPipeliningAssistance: false, withErrorHandling: false, withOutboundHeaderValidation: false,
                    withEncoderConfiguration: .init(), withDecoderLimitConfiguration: limits)
                let decoder = try operations.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
                let persistence = ConnectionPersistenceHandler()
                try operations.addHandler(persistence, position: .after(decoder))
                let fastPath = ReadFastPath(proxy: proxy)
                try operations.addHandler(fastPath, position: .after(persistence))
                // In front of NIO's encoder and decoder (and behind TLS, if any).
                let front = RawHeadRelay(proxy: proxy, back: fastPath)
                fastPath.front = front
                try operations.addHandler(front, position: .before(try operations.handler(type: HTTPResponseEncoder.self)))
                // First of all: admits the connection and times out those that send no request.
                try operations.addHandler(ConnectionGuard(limits: connectionLimits, counter: proxy.connections), position: .first)
                try operations.addHandler(HTTP1ToHTTPServerCodec(secure: false))
                try operations.addHandlers(configuration.additionalChannelHandlers())
                try operations.addHandler(HTTPConnectionStateHandler(
                    idleTimeout: configuration.idleTimeout.map { .init($0) }, logger: logger))
                return try NIOAsyncChannel(wrappingChannelSynchronously: channel, configuration: .init(
                    backPressureStrategy: Self.requestPartsAhead, isOutboundHalfClosureEnabled: true))
            }
        }

        func handle(value: HTTP1Channel.Value, logger: Logger) async {
            await base.handle(value: value, logger: logger)
        }
    }
}
