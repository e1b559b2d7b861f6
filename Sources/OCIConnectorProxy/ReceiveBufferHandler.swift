public import NIOCore

/// Lets a client connection read uploads in buffers of up to `maximum` bytes.
///
/// NIO's default reads at most 64 KiB per system call; a 1 GiB push then costs 16 384 reads and as
/// many hand-offs to the upstream connection. Larger reads, as nginx's 256 KiB buffers do, cut
/// both. The allocator is adaptive, so a connection that only sends small requests keeps small
/// buffers. Installed by ``ConnectorProxy/http1Server``.
public final class ReceiveBufferHandler: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    public typealias InboundIn = NIOAny

    /// The largest buffer one read may fill.
    public let maximum: Int

    /// A handler that allows reads of up to `maximum` bytes (256 KiB by default).
    public init(maximum: Int = 256 * 1024) {
        self.maximum = maximum
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        let allocator = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 16 * 1024, maximum: maximum)
        context.channel.setOption(ChannelOptions.recvAllocator, value: allocator).whenComplete { _ in }
    }
}
