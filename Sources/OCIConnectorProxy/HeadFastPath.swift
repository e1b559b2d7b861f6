import HTTPTypes
import Hummingbird
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import OCIAuth
import OCIBlobForwarder
import OCIReference

/// Answers `HEAD` of manifests and blobs on the connection's event loop, without a task per
/// request; every other request, and every `HEAD` it cannot finish on its own, goes on to the
/// ``ConnectorProxy`` responder as before.
///
/// `HEAD` of a manifest is what container runtimes send most ("what digest is this tag now?"),
/// and through the responder each cost about three times nginx's CPU (Performance.md). Here a
/// `HEAD` is served only when everything it needs is at hand without waiting: a remembered valid
/// proxy token that allows pulling, and an upstream `Authorization` that needs no token request.
/// The upstream's answer is relayed unless it is a 401 (the token must be renewed), a redirect to
/// follow, or lacks a length; then the request is handed to the responder, which does all of
/// that. A `HEAD` changes nothing upstream, so sending it twice is harmless.
///
/// Requests on one connection are answered in order: while an exchange is under way, requests
/// that follow it wait here (and reading pauses) until its response is complete.
final class HeadFastPath: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// What a `HEAD` served here needs.
    struct Plan {
        let upstream: ConnectorProxy.Upstream
        let target: String
        let headers: HTTPHeaders
        let host: String
        let prefix: String
        let log: RequestLog
    }

    private enum Exchange {
        case none
        /// The responder has the request.
        case passed
        /// This handler serves it; `head` is kept to hand it on if needed.
        case serving(HTTPRequest)
    }

    private let proxy: ConnectorProxy
    private var exchange = Exchange.none
    private var requestEnded = false
    private var responseEnded = false
    /// Parts of requests that came while an exchange was under way.
    private var waiting = CircularBuffer<HTTPRequestPart>()
    private var heldRead = false

    init(proxy: ConnectorProxy) {
        self.proxy = proxy
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

    func channelInactive(context: ChannelHandlerContext) {
        waiting.removeAll()
        context.fireChannelInactive()
    }

    /// A part belongs to the current exchange, or starts one when none is under way.
    private func accepts(_ part: HTTPRequestPart) -> Bool {
        if case .none = exchange { return true }
        return !requestEnded
    }

    private func process(_ part: HTTPRequestPart, context: ChannelHandlerContext) {
        switch (part, exchange) {
        case (.head(let request), .none):
            requestEnded = false
            responseEnded = false
            if let plan = proxy.headPlan(for: request) {
                exchange = .serving(request)
                serve(plan, context: context)
            } else {
                exchange = .passed
                context.fireChannelRead(wrapInboundOut(part))
            }
        case (.end, .serving):
            requestEnded = true
            finishIfDone(context: context)
        case (.body, .serving):
            break  // A HEAD has no body to speak of.
        case (.end, .passed):
            requestEnded = true
            context.fireChannelRead(wrapInboundOut(part))
            finishIfDone(context: context)
        default:
            context.fireChannelRead(wrapInboundOut(part))
        }
    }

    // MARK: Outbound

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data), case .passed = exchange {
            responseEnded = true
            context.write(data, promise: promise)
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
        plan.upstream.reads.startRead(.HEAD, plan.target, headers: plan.headers, on: context.eventLoop)
            .assumeIsolated()
            .whenComplete { [self] result in
                guard case .serving(let request) = exchange else { return }
                guard context.channel.isActive else {
                    plan.log.finish(status: 499, detail: "the client closed the connection")
                    return
                }
                guard case .success(let response) = result, let length = response.head.headers.first(name: "Content-Length"),
                      response.head.status != .unauthorized,
                      !(300..<400).contains(response.head.status.code) || plan.upstream.passRedirects
                else {
                    handOn(request, context: context)
                    return
                }
                var headers = ConnectorProxy.clientHeaders(response.head.headers, host: plan.host, prefix: plan.prefix, upstream: plan.upstream)
                headers[.contentLength] = length
                let status = response.head.status
                context.write(wrapOutboundOut(.head(HTTPResponse(
                    status: .init(code: Int(status.code), reasonPhrase: status.reasonPhrase), headerFields: headers))), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
                plan.log.finish(status: Int(status.code))
                responseEnded = true
                finishIfDone(context: context)
            }
    }

    /// Gives the request to the responder, as if it had just arrived.
    private func handOn(_ request: HTTPRequest, context: ChannelHandlerContext) {
        exchange = .passed
        context.fireChannelRead(wrapInboundOut(.head(request)))
        if requestEnded {
            context.fireChannelRead(wrapInboundOut(.end(nil)))
        }
        // Hummingbird takes what was read at the end of a read.
        context.fireChannelReadComplete()
    }

    /// After a complete exchange, the requests that waited are taken up: on the next turn of the
    /// event loop, since this may run inside the responder's write of its response.
    private func finishIfDone(context: ChannelHandlerContext) {
        guard requestEnded, responseEnded else { return }
        exchange = .none
        guard !waiting.isEmpty || heldRead else { return }
        context.eventLoop.assumeIsolated().execute { [self] in
            guard case .none = exchange, context.channel.isActive else { return }
            var forwarded = false
            while let part = waiting.first, accepts(part) {
                waiting.removeFirst()
                process(part, context: context)
                if case .passed = exchange { forwarded = true }
            }
            // Hummingbird takes what was read at the end of a read.
            if forwarded { context.fireChannelReadComplete() }
            if waiting.isEmpty, heldRead {
                heldRead = false
                context.read()
            }
        }
    }
}

extension ConnectorProxy {
    /// The plan for serving `request` on the event loop, or `nil` when the responder must: it is
    /// not a plain `HEAD` of a manifest or blob, its token is missing or not allowed, or the
    /// upstream's `Authorization` is not at hand without waiting.
    func headPlan(for request: HTTPRequest) -> HeadFastPath.Plan? {
        guard request.method == .head, request.headerFields[.connection] == nil,
              let path = request.path, !path.utf8.contains(where: { $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "%") })
        else { return nil }
        let host = request.authority ?? "localhost"
        guard let destination = try? destination(host: host, path: path), let connector = destination.connector,
              case .repository(let repository, let endpoint) = destination.route else { return nil }
        switch endpoint {
        case .manifest, .blob: break
        default: return nil
        }
        guard let claims = try? authenticator.claims(authorization: request.headerFields[.authorization]),
              claims.allows(connector: connector.description, action: "pull", repository: repository),
              let upstream = upstreams[connector] else { return nil }
        guard let authorization = upstream.client.readyAuthorization(
            for: ScopeHints.scopes(method: "HEAD", route: destination.route, mountFrom: nil)) else { return nil }
        var headers = Self.forwardableHeaders(request.headerFields)
        authorization.apply(to: &headers)
        let log = RequestLog(logger: logger, method: "HEAD")
        log.connector = connector.description
        log.repository = repository
        log.endpoint = endpoint.path
        return HeadFastPath.Plan(upstream: upstream, target: Self.upstreamPath(destination.route), headers: headers,
                                 host: host, prefix: destination.prefix, log: log)
    }
}
