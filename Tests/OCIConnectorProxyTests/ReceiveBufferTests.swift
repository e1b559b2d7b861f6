import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import Testing

@testable import OCIConnectorProxy

/// NIO keeps a receive buffer for reuse per read it makes in one wake-up, at the size it grew to:
/// the handler lets a connection read four times per wake-up only while a request body streams in.
@Suite("Receive buffers of client connections")
struct ReceiveBufferTests {
    /// Records, for each request part, how many reads per wake-up the connection is set to once
    /// ``ReceiveBufferHandler`` has seen the part.
    final class Probe: ChannelInboundHandler, Sendable {
        typealias InboundIn = HTTPServerRequestPart
        let seen = NIOLockedValueBox<[(String, UInt)]>([])

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let reads = (try? context.channel.syncOptions?.getOption(ChannelOptions.maxMessagesPerRead)) ?? 0
            let name =
                switch unwrapInboundIn(data) {
                case .head(let request): "head \(request.method.rawValue)"
                case .body: "body"
                case .end: "end"
                }
            seen.withLockedValue { $0.append((name, reads)) }
        }
    }

    @Test func readsManyPerWakeUpOnlyWhileABodyStreamsIn() async throws {
        let probe = Probe()
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let operations = channel.pipeline.syncOperations
                    try operations.configureHTTPServerPipeline(withPipeliningAssistance: false)
                    try operations.addHandler(ReceiveBufferHandler())
                    try operations.addHandler(probe)
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let client = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(to: server.localAddress!).get()
        // An upload, then a read: pipelined, so some arrive in one wake-up.
        try await client.writeAndFlush(
            ByteBuffer(
                string:
                    "PUT /v2/a/blobs/uploads/1 HTTP/1.1\r\nHost: p\r\nContent-Length: 5\r\n\r\nhello"
                    + "GET /v2/a/manifests/v1 HTTP/1.1\r\nHost: p\r\n\r\n")
        ).get()
        let deadline = ContinuousClock.now + .seconds(10)
        while probe.seen.withLockedValue({ $0.count }) < 5, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        try await client.close()
        try await server.close()

        let seen = probe.seen.withLockedValue { $0 }
        #expect(seen.map(\.0) == ["head PUT", "body", "end", "head GET", "end"])
        // Four while the body streams in; one once it ended (which drops the other buffers) and
        // for a request without a body.
        #expect(seen.map(\.1) == [4, 4, 1, 1, 1])
    }
}
