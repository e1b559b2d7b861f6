import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import OCIConnectorProxy

extension ConnectionPersistence {
    /// Applies a mutating call and returns its result, for use inside `#expect`.
    mutating func step<Result>(_ body: (inout Self) -> Result) -> Result { body(&self) }
}

/// When a client connection ends: its deadlines and its persistence, as values and on
/// `EmbeddedChannel`, whose clock the tests move.
@Suite("Client connection handling")
struct ConnectionHandlingTests {
    // MARK: Deadlines, as a value

    static let start = NIODeadline.uptimeNanoseconds(1_000_000_000)

    static func deadlines() -> ConnectionDeadlines {
        ConnectionDeadlines(headerTimeout: .seconds(30), idleTimeout: .seconds(60), openedAt: start)
    }

    @Test func anIdleConnectionExpiresAfterTheIdleTimeout() {
        let deadlines = Self.deadlines()
        #expect(deadlines.expiry(at: Self.start + .seconds(59)) == nil)
        #expect(deadlines.expiry(at: Self.start + .seconds(60)) == .idle)
    }

    @Test func aHeadStartedMustEndWithinTheHeaderTimeout() {
        var deadlines = Self.deadlines()
        deadlines.bytesRead(at: Self.start + .seconds(50))
        #expect(deadlines.expiry(at: Self.start + .seconds(79)) == nil)
        #expect(deadlines.expiry(at: Self.start + .seconds(80)) == .header)
        // More bytes of the same head do not push the deadline out.
        deadlines.bytesRead(at: Self.start + .seconds(70))
        #expect(deadlines.expiry(at: Self.start + .seconds(80)) == .header)
    }

    @Test func nothingExpiresWhileRequestsAreAnswered() {
        var deadlines = Self.deadlines()
        deadlines.bytesRead(at: Self.start)
        deadlines.requestStarted()
        deadlines.requestStarted()  // Pipelined.
        deadlines.bytesRead(at: Self.start + .seconds(1))  // An upload's body, or the next request.
        #expect(deadlines.deadline == nil)
        #expect(deadlines.expiry(at: Self.start + .hours(2)) == nil)
        deadlines.requestEnded(at: Self.start + .hours(2))
        #expect(deadlines.deadline == nil)
        deadlines.requestEnded(at: Self.start + .hours(3))
        #expect(deadlines.phase == .idle(since: Self.start + .hours(3)))
        #expect(deadlines.expiry(at: Self.start + .hours(3) + .seconds(60)) == .idle)
    }

    @Test func anUnmatchedEndChangesNothing() {
        var deadlines = Self.deadlines()
        deadlines.requestEnded(at: Self.start + .seconds(5))
        #expect(deadlines.phase == .idle(since: Self.start))
    }

    // MARK: Persistence, as a value

    @Test func theLastRequestsBodyIsReadThenNothingMore() {
        var state = ConnectionPersistence()
        #expect(state.step { $0.requestHead(.persistent) } == .forward)
        #expect(state.step { $0.requestPart(isEnd: true) } == .forward)
        #expect(state.step { $0.requestHead(.last) } == .forward)
        // Its body is still read: an upload may say `Connection: close`.
        #expect(state.readsMore)
        #expect(state.step { $0.requestPart(isEnd: false) } == .forward)
        #expect(state.step { $0.requestPart(isEnd: true) } == .forward)
        #expect(!state.readsMore)
        #expect(state.step { $0.requestHead(.persistent) } == .drop)
        #expect(state.step { $0.requestPart(isEnd: false) } == .drop)
        #expect(!state.answerIsLast)
        #expect(!state.step { $0.answerEnded() })
        #expect(state.answerIsLast)
        #expect(state.step { $0.answerEnded() })
    }

    @Test func nothingIsReadAfterTheHeadOfAConnectOrUpgrade() {
        var state = ConnectionPersistence()
        #expect(state.step { $0.requestHead(.lastHead) } == .forward)
        #expect(!state.readsMore)
        #expect(state.step { $0.requestPart(isEnd: true) } == .forward)
        #expect(state.answerIsLast)
        #expect(state.step { $0.answerEnded() })
    }

    @Test func aParseErrorIsAnsweredWhenNothingElseIs() {
        var idle = ConnectionPersistence()
        #expect(idle.step { $0.requestHead(.persistent) } == .forward)
        #expect(idle.step { $0.requestPart(isEnd: true) } == .forward)
        #expect(!idle.step { $0.answerEnded() })
        #expect(idle.step { $0.parseFailed() } == .answerAndClose)
        #expect(!idle.readsMore)
        #expect(idle.step { $0.parseFailed() } == .ignore)

        var busy = ConnectionPersistence()
        #expect(busy.step { $0.requestHead(.persistent) } == .forward)
        #expect(busy.step { $0.parseFailed() } == .closeAfterAnswers)
        #expect(busy.step { $0.requestPart(isEnd: false) } == .drop)
        #expect(busy.step { $0.answerEnded() })
    }

    @Test(
        arguments: [
            ("GET / HTTP/1.1", [], .persistent),
            ("GET / HTTP/1.1", [("Connection", "close")], .last),
            ("GET / HTTP/1.0", [], .last),
            ("GET / HTTP/1.0", [("Connection", "keep-alive")], .persistent),
            ("CONNECT a:1 HTTP/1.1", [], .lastHead),
            ("GET / HTTP/1.1", [("Upgrade", "websocket"), ("Connection", "Upgrade")], .lastHead),
            ("GET / HTTP/1.1", [("Upgrade", "h2c")], .lastHead),
        ] as [(String, [(String, String)], ConnectionPersistence.Continuation)])
    func theHeadSaysWhetherTheConnectionGoesOn(
        _ line: String, _ fields: [(String, String)], _ expected: ConnectionPersistence.Continuation
    ) {
        let parts = line.split(separator: " ")
        let version: HTTPVersion = parts[2] == "HTTP/1.0" ? .http1_0 : .http1_1
        let head = HTTPRequestHead(
            version: version, method: HTTPMethod(rawValue: String(parts[0])), uri: String(parts[1]),
            headers: HTTPHeaders(fields))
        #expect(ConnectionPersistence.continuation(head) == expected)
    }

    // MARK: On a channel

    /// A channel with the guard in front of NIO's HTTP/1 server pipeline and the persistence
    /// handler after its decoder, as the proxy has them; what reaches the end is kept.
    static func channel(limits: ConnectionLimits, counter: ConnectionCounter? = nil) throws -> (EmbeddedChannel, Recorder) {
        let channel = EmbeddedChannel()
        let recorder = Recorder()
        let operations = channel.pipeline.syncOperations
        try operations.configureHTTPServerPipeline(
            withPipeliningAssistance: false, withErrorHandling: false, withOutboundHeaderValidation: false,
            withEncoderConfiguration: .init(), withDecoderLimitConfiguration: limits.decoderLimits())
        let decoder = try operations.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
        let persistence = ConnectionPersistenceHandler()
        try operations.addHandler(persistence, position: .after(decoder))
        try operations.addHandler(recorder, position: .after(persistence))
        try operations.addHandler(
            ConnectionGuard(limits: limits, counter: counter ?? ConnectionCounter(maximum: limits.maxConnections)),
            position: .first)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return (channel, recorder)
    }

    /// Keeps the request parts that reach it, and can answer them.
    final class Recorder: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        var parts: [HTTPServerRequestPart] = []
        var context: ChannelHandlerContext?

        func handlerAdded(context: ChannelHandlerContext) { self.context = context }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            parts.append(unwrapInboundIn(data))
        }

        var heads: [HTTPRequestHead] {
            parts.compactMap { if case .head(let head) = $0 { head } else { nil } }
        }

        func answer(_ status: HTTPResponseStatus = .ok) {
            guard let context else { return }
            context.write(
                wrapOutboundOut(
                    .head(
                        HTTPResponseHead(
                            version: .http1_1, status: status,
                            headers: ["Content-Length": "0"]))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }

    static func written(_ channel: EmbeddedChannel) throws -> String {
        var text = ""
        while let data = try channel.readOutbound(as: IOData.self) {
            if case .byteBuffer(let buffer) = data { text += String(buffer: buffer) }
        }
        return text
    }

    static let limits = ConnectionLimits(
        headerTimeout: .seconds(2), idleTimeout: .seconds(8), maxHeadBytes: 1024, maxConnections: 2)

    @Test func aHeadThatNeverEndsIsAnswered408AndClosed() throws {
        let (channel, recorder) = try Self.channel(limits: Self.limits)
        try channel.writeInbound(ByteBuffer(string: "GET /v2/ HTTP/1.1\r\nHost: a\r\n"))
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(1900))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(200))
        let answer = try Self.written(channel)
        #expect(answer.hasPrefix("HTTP/1.1 408 Request Timeout\r\n"))
        #expect(answer.contains("Connection: close\r\n"))
        #expect(answer.contains(#"{"errors":[{"code":"#))
        #expect(!channel.isActive)
        #expect(recorder.heads.isEmpty)
    }

    @Test func anIdleConnectionClosesWithoutAnAnswerAndABusyOneStaysOpen() throws {
        let (channel, recorder) = try Self.channel(limits: Self.limits)
        try channel.writeInbound(ByteBuffer(string: "GET /v2/ HTTP/1.1\r\nHost: a\r\n\r\n"))
        #expect(recorder.heads.count == 1)
        // Answering takes long: no deadline while it does.
        channel.embeddedEventLoop.advanceTime(by: .seconds(60))
        #expect(channel.isActive)
        recorder.answer()
        #expect(try Self.written(channel).hasPrefix("HTTP/1.1 200 OK"))
        channel.embeddedEventLoop.advanceTime(by: .seconds(7))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        #expect(!channel.isActive)
        #expect(try Self.written(channel).isEmpty)
    }

    @Test func anOversizedHeadIsAnswered431() throws {
        let (channel, recorder) = try Self.channel(limits: Self.limits)
        _ = try? channel.writeInbound(
            ByteBuffer(string: "GET /v2/ HTTP/1.1\r\nX-Big: " + String(repeating: "a", count: 2000) + "\r\n\r\n"))
        let answer = try Self.written(channel)
        #expect(answer.hasPrefix("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "\(answer)")
        #expect(answer.contains("Connection: close\r\n"))
        #expect(recorder.heads.isEmpty)
        channel.embeddedEventLoop.run()
        #expect(!channel.isActive)
    }

    @Test func anHTTP10RequestIsAnsweredThenClosedAndWhatFollowsIsNeverSeen() throws {
        let (channel, recorder) = try Self.channel(limits: Self.limits)
        try channel.writeInbound(ByteBuffer(string: "GET /a HTTP/1.0\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n"))
        #expect(recorder.heads.map(\.uri) == ["/a"])
        recorder.answer()
        let answer = try Self.written(channel)
        #expect(answer.contains("Connection: close\r\n"), "\(answer)")
        channel.embeddedEventLoop.run()
        #expect(!channel.isActive)
        #expect(recorder.heads.map(\.uri) == ["/a"])
    }

    @Test func anUploadSayingConnectionCloseHasItsWholeBodyRead() throws {
        let (channel, recorder) = try Self.channel(limits: Self.limits)
        try channel.writeInbound(
            ByteBuffer(string: "PATCH /u HTTP/1.1\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"))
        try channel.writeInbound(ByteBuffer(string: "2\r\nde\r\n0\r\n\r\nGET /next HTTP/1.1\r\n\r\n"))
        let body = recorder.parts.compactMap { part -> String? in
            if case .body(let buffer) = part { String(buffer: buffer) } else { nil }
        }
        #expect(body.joined() == "abcde")
        #expect(recorder.parts.filter { if case .end = $0 { true } else { false } }.count == 1)
        #expect(recorder.heads.map(\.uri) == ["/u"])
        recorder.answer(.accepted)
        #expect(try Self.written(channel).contains("Connection: close\r\n"))
        channel.embeddedEventLoop.run()
        #expect(!channel.isActive)
    }

    @Test func pipelinedRequestsBeforeAnUpgradeAreAnsweredThenTheConnectionCloses() throws {
        let (channel, recorder) = try Self.channel(limits: Self.limits)
        try channel.writeInbound(
            ByteBuffer(string: "GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\nxxxx"))
        #expect(recorder.heads.map(\.uri) == ["/a", "/b"])
        recorder.answer()
        #expect(!(try Self.written(channel).contains("Connection: close")))
        #expect(channel.isActive)
        recorder.answer(.notFound)
        #expect(try Self.written(channel).contains("Connection: close\r\n"))
        channel.embeddedEventLoop.run()
        #expect(!channel.isActive)
    }

    @Test func aConnectionOverTheLimitIsAnswered503AndTheCountIsGivenBack() throws {
        let counter = ConnectionCounter(maximum: 2)
        let (first, _) = try Self.channel(limits: Self.limits, counter: counter)
        let (second, _) = try Self.channel(limits: Self.limits, counter: counter)
        let (third, recorder) = try Self.channel(limits: Self.limits, counter: counter)
        #expect(try Self.written(third).hasPrefix("HTTP/1.1 503 Service Unavailable\r\n"))
        third.embeddedEventLoop.run()
        #expect(!third.isActive)
        _ = try? third.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\n\r\n"))
        #expect(recorder.heads.isEmpty)
        #expect(counter.current == 2)
        _ = try first.finish()
        #expect(counter.current == 1)
        let (fourth, _) = try Self.channel(limits: Self.limits, counter: counter)
        #expect(try Self.written(fourth).isEmpty)
        #expect(fourth.isActive)
        _ = try? second.finish()
        _ = try? fourth.finish()
        #expect(counter.current == 0)
    }
}
