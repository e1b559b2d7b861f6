import Foundation
import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import OCIConnectors
import OCIProxyToken
import OCIReference
import Testing

@testable import OCIConnectorProxy

extension ClientConnectionState {
    /// Applies a mutating call and returns its result, for use inside `#expect`.
    mutating func step<Result>(_ body: (inout Self) -> Result) -> Result { body(&self) }
}

/// The one reader of a client connection's requests: its state machine as a value, and its
/// handler on `EmbeddedChannel` behind NIO's HTTP/1 codec, with exchanges the tests drive.
@Suite("Client connection exchanges")
struct ClientConnectionTests {
    static func head(_ method: HTTPMethod = .GET, _ uri: String = "/v2/") -> HTTPRequestHead {
        HTTPRequestHead(version: .http1_1, method: method, uri: uri)
    }

    // MARK: The state machine, as a value

    @Test func pipelinedRequestsWaitForTheAnswerBeforeThem() {
        var state = ClientConnectionState()
        #expect(state.step { $0.received(.head(Self.head(.GET, "/a"))) } == .start(Self.head(.GET, "/a")))
        #expect(state.step { $0.received(.end(nil)) } == .end(then: .none))
        #expect(state.step { $0.received(.head(Self.head(.GET, "/b"))) } == .wait)
        #expect(state.step { $0.received(.end(nil)) } == .wait)
        // Nothing more is read while parts wait.
        #expect(state.step { $0.readRequested() } == .hold)
        #expect(state.step { $0.nextWaiting() } == nil)
        #expect(state.step { $0.responseEnded() } == .takeUpWaiting)
        #expect(state.step { $0.nextWaiting() } == .start(Self.head(.GET, "/b")))
        #expect(state.step { $0.nextWaiting() } == .end(then: .none))
        #expect(state.step { $0.heldReadDue() })
        #expect(state.step { $0.responseEnded() } == .takeUpWaiting)
        #expect(state.phase == .idle)
    }

    @Test func anAnswerMayEndBeforeItsRequestDoes() {
        var state = ClientConnectionState()
        _ = state.step { $0.received(.head(Self.head(.PUT))) }
        #expect(state.step { $0.responseEnded() } == .none)
        #expect(!state.isAnswering)
        // The rest of the upload still belongs to it, not to a next request.
        #expect(state.step { $0.received(.body(ByteBuffer(string: "rest"))) } == .body(ByteBuffer(string: "rest")))
        #expect(state.step { $0.received(.end(nil)) } == .end(then: .takeUpWaiting))
    }

    @Test func readingPausesWhileTheExchangeHasEnoughOfTheBody() {
        var state = ClientConnectionState()
        _ = state.step { $0.received(.head(Self.head(.PUT))) }
        #expect(state.step { $0.readRequested() } == .read)
        state.pauseBody()
        #expect(state.step { $0.readRequested() } == .hold)
        #expect(state.step { $0.resumeBody() } == .read)
        #expect(state.step { $0.readRequested() } == .read)
        // A pause asked for after the body ended is void: there is nothing left to pause.
        _ = state.step { $0.received(.end(nil)) }
        state.pauseBody()
        #expect(state.step { $0.readRequested() } == .read)
    }

    @Test func quiescingClosesAnIdleConnectionAtOnceAndABusyOneAfterItsAnswer() {
        var idle = ClientConnectionState()
        #expect(idle.step { $0.quiesce() } == .close)
        #expect(idle.step { $0.received(.head(Self.head())) } == .drop)

        var busy = ClientConnectionState()
        _ = busy.step { $0.received(.head(Self.head(.GET, "/a"))) }
        _ = busy.step { $0.received(.end(nil)) }
        _ = busy.step { $0.received(.head(Self.head(.GET, "/b"))) }
        #expect(busy.step { $0.quiesce() } == .none)
        #expect(busy.step { $0.responseEnded() } == .close)
        #expect(busy.step { $0.nextWaiting() } == nil)
    }

    @Test func partsOutOfOrderCloseTheConnection() {
        var state = ClientConnectionState()
        #expect(state.step { $0.received(.body(ByteBuffer(string: "x"))) } == .drop)
        #expect(state.phase == .closing)
        #expect(state.step { $0.readRequested() } == .hold)
    }

    // MARK: On a channel

    /// What a test's exchange was told.
    final class Scripted: ClientExchange {
        let head: HTTPRequestHead
        unowned let connection: ClientConnectionHandler
        var body: [String] = []
        var ended = false
        var failed = false
        var failure: (any Error)?
        var closed = false
        var writable = 0

        init(head: HTTPRequestHead, connection: ClientConnectionHandler) {
            self.head = head
            self.connection = connection
        }

        func requestBodyPart(_ buffer: ByteBuffer) { body.append(String(buffer: buffer)) }
        func requestEnded() { ended = true }
        func requestFailed(_ error: any Error) {
            failed = true
            failure = error
        }
        func clientWritable() { writable += 1 }
        func clientClosed() { closed = true }

        func answer(_ status: HTTPResponseStatus = .ok, body: String? = nil, length: Bool = true) {
            var headers = HTTPHeaders()
            if length { headers.add(name: "Content-Length", value: "\(body?.utf8.count ?? 0)") }
            connection.writeHead(status, headers)
            if let body { _ = connection.writeBodyPart(ByteBuffer(string: body)) }
            connection.writeEnd()
        }
    }

    /// Starts a ``Scripted`` exchange for each request; `continues` also tells the client to
    /// send the body.
    final class Starter: ExchangeStarter, @unchecked Sendable {
        var exchanges: [Scripted] = []
        var continues = false

        func startExchange(for head: HTTPRequestHead, on connection: ClientConnectionHandler) -> (any ClientExchange)? {
            let exchange = Scripted(head: head, connection: connection)
            exchanges.append(exchange)
            if continues { connection.writeContinue() }
            return exchange
        }
    }

    /// Counts the reads that reach the socket.
    final class Reads: ChannelOutboundHandler {
        typealias OutboundIn = Any
        var count = 0

        func read(context: ChannelHandlerContext) {
            count += 1
            context.read()
        }
    }

    /// NIO's HTTP/1 codec, the persistence handler and the connection handler, as the proxy has
    /// them, with `starter`'s exchanges.
    static func channel(_ starter: any ExchangeStarter, bodyTimeout: TimeAmount? = nil) throws -> (EmbeddedChannel, Reads) {
        let channel = EmbeddedChannel()
        let reads = Reads()
        let operations = channel.pipeline.syncOperations
        try operations.addHandler(reads)
        try operations.configureHTTPServerPipeline(
            withPipeliningAssistance: false, withErrorHandling: false, withOutboundHeaderValidation: false,
            withEncoderConfiguration: .init(), withDecoderLimitConfiguration: .init())
        try operations.addHandlers([
            ConnectionPersistenceHandler(), ClientConnectionHandler(starter: starter, bodyTimeout: bodyTimeout),
        ])
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return (channel, reads)
    }

    static func written(_ channel: EmbeddedChannel) throws -> String {
        try ConnectionHandlingTests.written(channel)
    }

    @Test func pipelinedRequestsAreAnsweredInOrderOnAConnectionKeptAlive() throws {
        let starter = Starter()
        let (channel, _) = try Self.channel(starter)
        try channel.writeInbound(ByteBuffer(string: "GET /a HTTP/1.1\r\nHost: p\r\n\r\nGET /b HTTP/1.1\r\nHost: p\r\n\r\n"))
        #expect(starter.exchanges.map(\.head.uri) == ["/a"])
        starter.exchanges[0].answer(body: "first")
        channel.embeddedEventLoop.run()
        #expect(starter.exchanges.map(\.head.uri) == ["/a", "/b"])
        starter.exchanges[1].answer(body: "second")
        let written = try Self.written(channel)
        #expect(written.components(separatedBy: "HTTP/1.1 200 OK").count == 3)
        #expect(written.range(of: "first")!.lowerBound < written.range(of: "second")!.lowerBound)
        #expect(!written.contains("Connection: close"))
        // Kept alive: a third request is taken up at once.
        try channel.writeInbound(ByteBuffer(string: "GET /c HTTP/1.1\r\nHost: p\r\n\r\n"))
        #expect(starter.exchanges.count == 3)
        #expect(channel.isActive)
    }

    @Test func aHeadAnswerCarriesItsLengthAndNoBody() throws {
        let starter = Starter()
        let (channel, _) = try Self.channel(starter)
        try channel.writeInbound(ByteBuffer(string: "HEAD /a HTTP/1.1\r\nHost: p\r\n\r\n"))
        starter.exchanges[0].connection.writeHead(.ok, ["Content-Length": "1234"])
        starter.exchanges[0].connection.writeEnd()
        #expect(try Self.written(channel) == "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
        // Without a length, a HEAD answer is not framed as chunked: no terminating chunk follows.
        channel.embeddedEventLoop.run()
        try channel.writeInbound(ByteBuffer(string: "HEAD /b HTTP/1.1\r\nHost: p\r\n\r\n"))
        starter.exchanges[1].answer(length: false)
        let unframed = try Self.written(channel)
        #expect(!unframed.hasSuffix("0\r\n\r\n"), "\(unframed)")
        // A GET answer without a length is chunked.
        channel.embeddedEventLoop.run()
        try channel.writeInbound(ByteBuffer(string: "GET /c HTTP/1.1\r\nHost: p\r\n\r\n"))
        starter.exchanges[2].answer(body: "abc", length: false)
        #expect(try Self.written(channel).hasSuffix("\r\n3\r\nabc\r\n0\r\n\r\n"))
    }

    @Test func anUploadsBodyReachesItsExchangeAndReadingPausesWhileItHasEnough() throws {
        let starter = Starter()
        let (channel, reads) = try Self.channel(starter)
        try channel.writeInbound(ByteBuffer(string: "PUT /u HTTP/1.1\r\nHost: p\r\nContent-Length: 10\r\n\r\nhello"))
        let exchange = try #require(starter.exchanges.first)
        #expect(exchange.body == ["hello"])
        let before = reads.count
        exchange.connection.pauseRequestBody()
        channel.read()
        #expect(reads.count == before, "read while the exchange has enough")
        exchange.connection.resumeRequestBody()
        #expect(reads.count == before + 1, "the held read is made once the exchange wants more")
        try channel.writeInbound(ByteBuffer(string: "world"))
        #expect(exchange.body == ["hello", "world"])
        #expect(exchange.ended)
        exchange.answer(.created)
        #expect(try Self.written(channel).hasPrefix("HTTP/1.1 201 Created\r\n"))
    }

    @Test func aClientWaitingToSendIsToldToContinueBeforeTheAnswer() throws {
        let starter = Starter()
        starter.continues = true
        let (channel, _) = try Self.channel(starter)
        try channel.writeInbound(
            ByteBuffer(string: "PUT /u HTTP/1.1\r\nHost: p\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"))
        #expect(try Self.written(channel) == "HTTP/1.1 100 Continue\r\n\r\n")
        try channel.writeInbound(ByteBuffer(string: "ok"))
        let exchange = try #require(starter.exchanges.first)
        #expect(exchange.body == ["ok"] && exchange.ended)
        exchange.answer(.created)
        let answer = try Self.written(channel)
        #expect(answer.hasPrefix("HTTP/1.1 201 Created\r\n"))
        // The interim answer is not the request's answer: the connection goes on.
        #expect(!answer.contains("Connection: close") && channel.isActive)
    }

    @Test func theClientLeavingStopsTheExchangeAndWhatWaitedIsNeverStarted() throws {
        let starter = Starter()
        let (channel, _) = try Self.channel(starter)
        try channel.writeInbound(ByteBuffer(string: "GET /a HTTP/1.1\r\nHost: p\r\n\r\nGET /b HTTP/1.1\r\nHost: p\r\n\r\n"))
        try channel.close().wait()
        channel.embeddedEventLoop.run()
        #expect(starter.exchanges.count == 1)
        #expect(starter.exchanges[0].closed)
    }

    @Test func anAnswerCutShortClosesTheConnection() throws {
        let starter = Starter()
        let (channel, _) = try Self.channel(starter)
        try channel.writeInbound(ByteBuffer(string: "GET /a HTTP/1.1\r\nHost: p\r\n\r\nGET /b HTTP/1.1\r\nHost: p\r\n\r\n"))
        let exchange = starter.exchanges[0]
        exchange.connection.writeHead(.ok, ["Content-Length": "100"])
        _ = exchange.connection.writeBodyPart(ByteBuffer(string: "part"))
        // The upstream reset mid-body: the client can only learn it from the connection closing.
        exchange.connection.abort()
        channel.embeddedEventLoop.run()
        #expect(!channel.isActive)
        #expect(starter.exchanges.count == 1)
    }

    @Test func writabilityGoesBackToTheExchange() throws {
        let starter = Starter()
        let (channel, _) = try Self.channel(starter)
        try channel.writeInbound(ByteBuffer(string: "GET /a HTTP/1.1\r\nHost: p\r\n\r\n"))
        let exchange = starter.exchanges[0]
        exchange.connection.writeHead(.ok, ["Content-Length": "8"])
        channel.isWritable = false
        #expect(!exchange.connection.writeBodyPart(ByteBuffer(string: "1234")), "the exchange must pause its source")
        channel.isWritable = true
        channel.pipeline.fireChannelWritabilityChanged()
        #expect(exchange.writable == 1)
    }

    @Test func theNextRequestWaitsUntilTheClientTakesTheAnswerBeforeIt() throws {
        let starter = Starter()
        let (channel, _) = try Self.channel(starter)
        try channel.writeInbound(ByteBuffer(string: "GET /a HTTP/1.1\r\nHost: p\r\n\r\nGET /b HTTP/1.1\r\nHost: p\r\n\r\n"))
        channel.isWritable = false
        starter.exchanges[0].answer(body: "first")
        channel.embeddedEventLoop.run()
        #expect(starter.exchanges.count == 1, "answered while the client reads nothing")
        channel.isWritable = true
        channel.pipeline.fireChannelWritabilityChanged()
        #expect(starter.exchanges.map(\.head.uri) == ["/a", "/b"])
    }

    @Test func aBodyThatWillNotComeWholeFailsTheExchange() throws {
        let starter = Starter()
        let (channel, _) = try Self.channel(starter)
        try channel.writeInbound(
            ByteBuffer(string: "PUT /u HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"))
        _ = try? channel.writeInbound(ByteBuffer(string: "zz\r\n"))  // Not a chunk size.
        let exchange = try #require(starter.exchanges.first)
        #expect(exchange.body == ["hello"] && exchange.failed && !exchange.ended)
        // Its answer is still written, and the connection closes after it.
        exchange.answer(.badRequest)
        channel.embeddedEventLoop.run()
        #expect(try Self.written(channel).contains("Connection: close"))
        #expect(!channel.isActive)
    }

    @Test func shuttingDownClosesAfterTheAnswerUnderWay() throws {
        let starter = Starter()
        let (channel, _) = try Self.channel(starter)
        try channel.writeInbound(ByteBuffer(string: "GET /a HTTP/1.1\r\nHost: p\r\n\r\nGET /b HTTP/1.1\r\nHost: p\r\n\r\n"))
        channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        #expect(channel.isActive)
        starter.exchanges[0].answer(body: "last")
        channel.embeddedEventLoop.run()
        #expect(try Self.written(channel).hasSuffix("last"))
        #expect(!channel.isActive)
        #expect(starter.exchanges.count == 1)
    }

    // MARK: The proxy's own answers, on a channel

    /// A proxy for one connector whose registry is never reached: these answers come first.
    static func proxy() throws -> ConnectorProxy {
        let connector = Connector(
            id: try ConnectorID(namespace: "team", name: "hub"),
            address: try RegistryAddress(parsing: "http://127.0.0.1:9"), credentials: nil)
        return try ConnectorProxy(
            catalog: ConnectorCatalog([connector]),
            verifier: ProxyTokenVerifier(keys: [ProxyTokenSigner().verificationKey]),
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
    }

    @Test func refusalsArePipelinedInOrderAndAnInvalidManifestNameIsUnknown() async throws {
        let proxy = try Self.proxy()
        defer { Task { await proxy.shutdown() } }
        let (channel, _) = try Self.channel(proxy)
        let prefix = "/v2/namespaces/team/connectors/hub/app"
        try channel.writeInbound(
            ByteBuffer(
                string:
                    "HEAD \(prefix)/manifests/.INVALID_MANIFEST_NAME HTTP/1.1\r\nHost: p\r\n\r\n"
                    + "GET /v2/ HTTP/1.1\r\nHost: p\r\n\r\n"
                    + "PUT \(prefix)/manifests/.INVALID_MANIFEST_NAME HTTP/1.1\r\nHost: p\r\nContent-Length: 2\r\n\r\n{}"
                    + "DELETE \(prefix)/manifests/.INVALID_MANIFEST_NAME HTTP/1.1\r\nHost: p\r\n\r\n"))
        for _ in 0..<4 { channel.embeddedEventLoop.run() }
        let written = try Self.written(channel)
        let statuses = written.components(separatedBy: "HTTP/1.1 ").dropFirst().map { String($0.prefix(3)) }
        #expect(statuses == ["404", "401", "404", "404"])
        #expect(written.contains(#"WWW-Authenticate: Basic realm="oci-connector-proxy""#))
        #expect(written.components(separatedBy: #"{"errors":[{"code":"MANIFEST_UNKNOWN""#).count == 3)  // HEAD has no body.
        #expect(channel.isActive)
    }

    /// A digest of an algorithm no registry can verify (or spelt in capitals) is refused with
    /// 400 `DIGEST_INVALID`, in blob and manifest paths alike, before the token is looked at.
    @Test(arguments: [
        ("blobs/sha1:\(String(repeating: "a", count: 40))", "400", "DIGEST_INVALID"),
        ("blobs/SHA256:\(String(repeating: "a", count: 64))", "400", "DIGEST_INVALID"),
        ("blobs/sha256+b64u:\(String(repeating: "0A", count: 16))", "400", "DIGEST_INVALID"),
        ("manifests/md5:\(String(repeating: "a", count: 32))", "400", "DIGEST_INVALID"),
    ])
    func unverifiableDigestsAreRefused(path: String, status: String, code: String) async throws {
        let proxy = try Self.proxy()
        defer { Task { await proxy.shutdown() } }
        let (channel, _) = try Self.channel(proxy)
        try channel.writeInbound(
            ByteBuffer(string: "GET /v2/namespaces/team/connectors/hub/app/\(path) HTTP/1.1\r\nHost: p\r\n\r\n"))
        channel.embeddedEventLoop.run()
        let written = try Self.written(channel)
        #expect(written.hasPrefix("HTTP/1.1 \(status) "), "\(written)")
        #expect(written.contains(#"{"errors":[{"code":"\#(code)""#), "\(written)")
    }
}
