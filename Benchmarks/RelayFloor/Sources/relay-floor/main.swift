// Three servers on two event loops, each the least a manifest path can do:
//
//   static-raw    answers every request head with a fixed 200, in bytes: the cost of NIO's event
//                 loop and sockets for one exchange;
//   static-codec  the same through NIO's HTTP/1 decoder and encoder (`HTTPHeaders`), as the
//                 proxy's `/v2/` answer goes;
//   relay-raw     relays bodiless requests (manifest `HEAD`s) to an upstream over one connection of
//                 its own per client connection, on the client's event loop, editing the bytes:
//                 the path loses a prefix, `Authorization` is dropped, `Host` is replaced. The
//                 upstream's response head goes back unchanged.
//
// None of them checks tokens, logs, or handles bodies, pipelining limits or errors: they are
// measuring sticks, not proxies.
//
//     relay-floor MODE PORT [UPSTREAM-PORT PREFIX]

import NIOCore
import NIOHTTP1
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

let arguments = CommandLine.arguments
guard arguments.count >= 3, let port = Int(arguments[2]) else {
    print("usage: relay-floor static-raw|static-codec|relay-raw PORT [UPSTREAM-PORT PREFIX]")
    exit(2)
}
let mode = arguments[1]
let upstreamPort = arguments.count > 3 ? Int(arguments[3]) ?? 0 : 0
let stripped = Array((arguments.count > 4 ? arguments[4] : "").utf8)

let fixedAnswer =
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nDocker-Distribution-Api-Version: registry/2.0\r\nContent-Length: 2\r\n\r\n{}"

/// The length of the request or response head at the start of `buffer`, `nil` until it is whole.
func headLength(_ buffer: ByteBuffer) -> Int? {
    buffer.withUnsafeReadableBytes { bytes -> Int? in
        guard bytes.count >= 4 else { return nil }
        for index in 3..<bytes.count
        where bytes[index] == 10 && bytes[index - 1] == 13
            && bytes[index - 2] == 10 && bytes[index - 3] == 13
        {
            return index + 1
        }
        return nil
    }
}

/// Bytes read so far and not yet taken.
struct Cumulation {
    private var buffer: ByteBuffer?

    mutating func append(_ incoming: ByteBuffer) {
        if buffer == nil {
            buffer = incoming
        } else {
            var incoming = incoming
            buffer!.writeBuffer(&incoming)
        }
    }

    /// The next whole head, if there is one.
    mutating func nextHead() -> ByteBuffer? {
        guard let whole = buffer, let length = headLength(whole) else { return nil }
        let head = buffer!.readSlice(length: length)
        if buffer!.readableBytes == 0 { buffer = nil }
        return head
    }
}

final class StaticRaw: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private var read = Cumulation()

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        read.append(unwrapInboundIn(data))
        while read.nextHead() != nil {
            context.write(wrapOutboundOut(context.channel.allocator.buffer(string: fixedAnswer)), promise: nil)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }
}

final class StaticCodec: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .end = unwrapInboundIn(data) else { return }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Docker-Distribution-Api-Version", value: "registry/2.0")
        headers.add(name: "Content-Length", value: "2")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: "{}")))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }
}

/// The client side of `relay-raw`: one request upstream at a time, in the order they came.
final class RelayServer: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private var read = Cumulation()
    private var upstream: (any Channel)?
    private var waiting = false
    private var context: ChannelHandlerContext?

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func channelActive(context: ChannelHandlerContext) {
        let server = NIOLoopBound(self, eventLoop: context.eventLoop)
        ClientBootstrap(group: context.eventLoop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(RelayClient(server: server.value))
                }
            }
            .connect(host: "127.0.0.1", port: upstreamPort)
            .assumeIsolated()
            .whenComplete { result in
                switch result {
                case .success(let channel):
                    self.upstream = channel
                    self.sendNext()
                case .failure:
                    context.close(promise: nil)
                }
            }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        read.append(unwrapInboundIn(data))
        sendNext()
    }

    func channelInactive(context: ChannelHandlerContext) {
        upstream?.close(promise: nil)
        context.fireChannelInactive()
    }

    private func sendNext() {
        guard !waiting, let upstream, let head = read.nextHead() else { return }
        waiting = true
        upstream.writeAndFlush(Self.rewrite(head, allocator: upstream.allocator), promise: nil)
    }

    /// `head` with `stripped` taken out of its path after `/v2`, without `Authorization`, and
    /// with the upstream's `Host`.
    static func rewrite(_ head: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        var out = allocator.buffer(capacity: head.readableBytes)
        head.withUnsafeReadableBytes { bytes in
            var index = 0
            while bytes[index] != UInt8(ascii: " ") { index += 1 }
            let afterVersion = min(index + 4, bytes.count)  // " /v2"
            out.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[0..<afterVersion]))
            var rest = afterVersion
            if bytes.count > rest + stripped.count, bytes[rest..<(rest + stripped.count)].elementsEqual(stripped) {
                rest += stripped.count
            }
            var line = rest
            while line < bytes.count {
                var end = line
                while bytes[end] != 10 { end += 1 }
                let field = bytes[line...end]
                if line == rest || !(hasName("authorization", field) || hasName("host", field)) {
                    out.writeBytes(UnsafeRawBufferPointer(rebasing: field))
                }
                if hasName("host", field) {
                    out.writeString("Host: 127.0.0.1:\(upstreamPort)\r\n")
                }
                line = end + 1
            }
        }
        return out
    }

    /// Whether a header line starts with `name:`, in any case.
    static func hasName(_ name: StaticString, _ field: Slice<UnsafeRawBufferPointer>) -> Bool {
        let length = name.utf8CodeUnitCount
        guard field.count > length, field[field.startIndex + length] == UInt8(ascii: ":") else { return false }
        return name.withUTF8Buffer { name in
            zip(name, field).allSatisfy { $0 == $1 | 0x20 }
        }
    }

    func answered(_ head: ByteBuffer) {
        waiting = false
        context?.writeAndFlush(wrapOutboundOut(head), promise: nil)
        sendNext()
    }
}

/// The upstream side of `relay-raw`: hands each response head (bodiless answers only) back.
final class RelayClient: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    private let server: RelayServer
    private var read = Cumulation()

    init(server: RelayServer) {
        self.server = server
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        read.append(unwrapInboundIn(data))
        while let head = read.nextHead() {
            server.answered(head)
        }
    }
}

let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
let channel = try await ServerBootstrap(group: group)
    .serverChannelOption(.backlog, value: 256)
    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
    .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
            let operations = channel.pipeline.syncOperations
            switch mode {
            case "static-raw":
                try operations.addHandler(StaticRaw())
            case "static-codec":
                try operations.configureHTTPServerPipeline(withPipeliningAssistance: false, withErrorHandling: false)
                try operations.addHandler(StaticCodec())
            case "relay-raw":
                try operations.addHandler(RelayServer())
            default:
                throw ChannelError.operationUnsupported
            }
        }
    }
    .bind(host: "127.0.0.1", port: port)
    .get()
try await channel.closeFuture.get()
