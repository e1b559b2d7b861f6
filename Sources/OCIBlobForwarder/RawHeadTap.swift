package import NIOCore

/// The answer to a `HEAD` sent as bytes with ``BlobFetcher/startRawHead(_:on:answered:)``: the head as
/// it arrived, scanned in place.
package struct RawResponseHead: Sendable {
    /// The head's bytes, its blank line included.
    package let bytes: ByteBuffer
    package let head: HTTPHead
    package let status: Int
}

/// Sits in front of a ``BlobFetcher`` connection's HTTP/1 codec and, for a `HEAD` written as
/// bytes, takes the answer's head from the socket before the codec sees it.
///
/// A `HEAD` answer has no body, so the codec never learns of the exchange and is where it was
/// for the next request. An answer whose head is not scanned (``HTTPHead/Scan/unsupported``),
/// or with bytes after its head, leaves the connection unusable: it is reported and the
/// connection is closed by its handler.
final class RawHeadTap: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    /// What arrived for the `HEAD` awaited.
    enum Arrival {
        /// The head, and whether bytes followed it.
        case head(RawResponseHead, trailingBytes: Bool)
        case malformed
    }

    private var awaiting: ((Arrival) -> Void)?
    private var received: ByteBuffer?
    private var context: ChannelHandlerContext?

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    /// Writes `request`, a whole `HEAD` request head, and calls `arrival` once with its answer.
    func send(_ request: ByteBuffer, arrival: @escaping (Arrival) -> Void) {
        guard let context else { return }
        awaiting = arrival
        received = nil
        context.writeAndFlush(wrapOutboundOut(.byteBuffer(request)), promise: nil)
    }

    /// Stops waiting (the connection failed, or its handler gave up on it).
    func cancel() {
        awaiting = nil
        received = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let arrival = awaiting else {
            context.fireChannelRead(data)
            return
        }
        var buffer = unwrapInboundIn(data)
        if received != nil {
            received!.writeBuffer(&buffer)
        } else {
            received = buffer
        }
        while var bytes = received {
            let scan = bytes.withUnsafeReadableBytes { HTTPHead.scan($0) }
            switch scan {
            case .incomplete:
                return
            case .unsupported:
                cancel()
                arrival(.malformed)
                return
            case .head(let head):
                let headBytes = bytes.readSlice(length: head.length)!
                guard let status = headBytes.withUnsafeReadableBytes({ head.statusCode(in: $0) }) else {
                    cancel()
                    arrival(.malformed)
                    return
                }
                if status < 200 {
                    // An interim answer (such as 103 Early Hints): the real one follows.
                    received = bytes.readableBytes > 0 ? bytes : nil
                    continue
                }
                cancel()
                arrival(.head(RawResponseHead(bytes: headBytes, head: head, status: status), trailingBytes: bytes.readableBytes > 0))
                return
            }
        }
    }
}
