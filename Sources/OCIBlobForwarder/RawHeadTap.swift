package import NIOCore

/// The answer to a request sent as bytes with ``BlobFetcher/startRawHead(_:on:bodyLimit:answered:)``:
/// the head as it arrived, scanned in place, and the body when one was asked for.
package struct RawResponseHead: Sendable {
    /// The head's bytes, its blank line included.
    package let bytes: ByteBuffer
    package let head: HTTPHead
    package let status: Int
    /// The whole body: empty for a `HEAD` and for answers without one. `nil` when the body
    /// could not be taken whole (no `Content-Length`, or more than the limit asked for): it
    /// was not read, and the connection is closed.
    package let body: ByteBuffer?
}

/// Sits in front of a ``BlobFetcher`` connection's HTTP/1 codec and, for a request written as
/// bytes, takes the answer from the socket before the codec sees it: the head, and for a `GET`
/// the body, up to a limit and only when `Content-Length` frames it.
///
/// The codec never learns of the exchange and is where it was for the next request. An answer
/// whose head is not scanned (``HTTPHead/Scan/unsupported``), with bytes after its end, or with a
/// body not taken, leaves the connection unusable: it is reported and the connection is closed
/// by its handler.
final class RawHeadTap: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    /// What arrived for the request awaited.
    enum Arrival {
        /// The answer, and whether the connection can carry another request: not when bytes
        /// followed the answer, or its body was not taken.
        case head(RawResponseHead, reusable: Bool)
        case malformed
    }

    /// Called with the answer and the generation the request was sent with. Its sender's one
    /// reference is all it captures, which costs no allocation per request.
    private var awaiting: ((Arrival, Int) -> Void)?
    private var generation = 0
    /// The largest body taken whole; 0 for a `HEAD`, whose answer has none.
    private var bodyLimit = 0
    private var received: ByteBuffer?
    private var context: ChannelHandlerContext?

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    /// Writes `request`, a whole bodiless request head, and calls `arrival` once with its
    /// answer and `generation`: for a `HEAD` (`bodyLimit` 0) the head alone, for a `GET` also a
    /// body of up to `bodyLimit` bytes.
    func send(_ request: ByteBuffer, bodyLimit: Int, generation: Int, arrival: @escaping (Arrival, Int) -> Void) {
        guard let context else { return }
        awaiting = arrival
        self.generation = generation
        self.bodyLimit = bodyLimit
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
                arrival(.malformed, generation)
                return
            case .head(let head):
                let headBytes = bytes.readSlice(length: head.length)!
                guard let status = headBytes.withUnsafeReadableBytes({ head.statusCode(in: $0) }) else {
                    cancel()
                    arrival(.malformed, generation)
                    return
                }
                if status < 200 {
                    // An interim answer (such as 103 Early Hints): the real one follows.
                    received = bytes.readableBytes > 0 ? bytes : nil
                    continue
                }
                let length = bodyLimit == 0 || status == 204 || status == 304
                    ? 0 : headBytes.withUnsafeReadableBytes { head.framedBodyLength(in: $0) }
                guard let length, length <= bodyLimit else {
                    // Not framed by a length, or too long to hold: not read here.
                    cancel()
                    let response = RawResponseHead(bytes: headBytes, head: head, status: status, body: nil)
                    arrival(.head(response, reusable: false), generation)
                    return
                }
                guard bytes.readableBytes >= length else {
                    return  // The rest of the body is still to come; the head is scanned again then.
                }
                let body = bytes.readSlice(length: length)!
                cancel()
                arrival(.head(RawResponseHead(bytes: headBytes, head: head, status: status, body: body),
                              reusable: bytes.readableBytes == 0), generation)
                return
            }
        }
    }
}
