import HTTPTypes
public import NIOCore
public import NIOHTTPTypes

/// Answers `Expect: 100-continue` at once, as nginx does.
///
/// Hummingbird writes nothing before its responder returns, and the responder reads the upload
/// as it streams it upstream, so a client that waits for `100 Continue` before sending a body
/// (curl does for anything over 1 MiB) would otherwise stall for its timeout on every upload.
/// Install it with ``ConnectorProxy/http1Server``.
public final class ExpectContinueHandler: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    public typealias InboundIn = HTTPRequestPart
    public typealias InboundOut = HTTPRequestPart
    public typealias OutboundOut = HTTPResponsePart

    public init() {}

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var part = unwrapInboundIn(data)
        if case .head(var head) = part, head.headerFields[.expect]?.lowercased() == "100-continue" {
            head.headerFields[.expect] = nil
            context.writeAndFlush(wrapOutboundOut(.head(HTTPResponse(status: .continue))), promise: nil)
            part = .head(head)
        }
        context.fireChannelRead(wrapInboundOut(part))
    }
}
