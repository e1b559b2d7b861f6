import NIOCore
import NIOHTTP1

/// Lets a client connection read uploads in buffers of up to `maximum` bytes, and keeps one
/// receive buffer, not four, while no upload streams in.
///
/// NIO's default reads at most 64 KiB per system call; a 1 GiB push then costs 16 384 reads and as
/// many hand-offs to the upstream connection. Larger reads, as nginx's 256 KiB buffers do, cut
/// both. The allocator is adaptive, so a connection that only sends small requests keeps small
/// buffers.
///
/// NIO keeps, per connection, as many receive buffers for reuse as it reads per wake-up (four by
/// default), at the largest size they grew to: a connection that carried a push held about 1 MiB
/// until the client closed it, idle or not. While a request body streams in, the connection
/// reads four times per wake-up (one read per wake-up costs a fifth more CPU per pushed GiB);
/// otherwise once, which keeps one buffer.
final class ReceiveBufferHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart

    /// The largest buffer one read may fill.
    let maximum: Int
    /// The reads per wake-up the channel is set to.
    private var readsPerWakeUp: UInt = 1

    /// Reads per wake-up (and receive buffers kept) while a request body streams in: NIO's default.
    static let readsWhileUploading: UInt = 4

    /// A handler that allows reads of up to `maximum` bytes (256 KiB by default).
    init(maximum: Int = 256 * 1024) {
        self.maximum = maximum
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let allocator = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 16 * 1024, maximum: maximum)
        context.channel.setOption(ChannelOptions.recvAllocator, value: allocator).whenComplete { _ in }
        context.channel.setOption(ChannelOptions.maxMessagesPerRead, value: 1).whenComplete { _ in }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let request) where request.announcesBody:
            setReadsPerWakeUp(Self.readsWhileUploading, context: context)
        case .end:
            // Fewer reads per wake-up also drop the receive buffers kept beyond one.
            setReadsPerWakeUp(1, context: context)
        default:
            break
        }
        context.fireChannelRead(data)
    }

    /// Sets the reads per wake-up when they change: most requests have no body, and setting the
    /// option at each request's end cost more than the rest of this handler.
    private func setReadsPerWakeUp(_ reads: UInt, context: ChannelHandlerContext) {
        guard reads != readsPerWakeUp else { return }
        readsPerWakeUp = reads
        try? context.channel.syncOptions?.setOption(ChannelOptions.maxMessagesPerRead, value: reads)
    }
}
