import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import OCIConnectorProxy

@Suite("Request limits and the request body's timeout")
struct RequestLimitsTests {
    // MARK: Requests under way per identity and per connector

    @Test func eachLimitRefusesTheRequestBeyondItAndAReleaseMakesRoom() throws {
        let concurrency = RequestConcurrency(limits: RequestLimits(perIdentity: 2, perConnector: 3))
        let first = try concurrency.admit(identity: "ci", connector: "team/hub").get()
        let second = try concurrency.admit(identity: "ci", connector: "team/hub").get()
        // A third of the same identity is refused; another identity still fits the connector.
        #expect(throws: RequestConcurrency.LimitReached.self) {
            try concurrency.admit(identity: "ci", connector: "team/hub").get()
        }
        let other = try concurrency.admit(identity: "deploy", connector: "team/hub").get()
        // The connector is full now, for every identity.
        let full = concurrency.admit(identity: "fresh", connector: "team/hub")
        guard case .failure(let reached) = full else {
            Issue.record("the connector's limit admitted a fourth request")
            return
        }
        #expect(reached.limit == .connector)
        #expect(reached.maximum == 3)
        // Another connector is counted on its own.
        _ = try concurrency.admit(identity: "fresh", connector: "team/other").get()

        first.release()
        first.release()  // Released once only.
        #expect(concurrency.underWay(identity: "ci", connector: "team/hub") == (1, 2))
        _ = try concurrency.admit(identity: "ci", connector: "team/hub").get()
        withExtendedLifetime((second, other)) {}
    }

    @Test func aLeaseThatIsDroppedGivesItsPlaceBack() throws {
        let concurrency = RequestConcurrency(limits: RequestLimits(perIdentity: 1, perConnector: 1))
        do {
            let lease = try concurrency.admit(identity: "ci", connector: "team/hub").get()
            #expect(concurrency.underWay(identity: "ci", connector: "team/hub") == (1, 1))
            withExtendedLifetime(lease) {}
        }
        #expect(concurrency.underWay(identity: "ci", connector: "team/hub") == (0, 0))
        _ = try concurrency.admit(identity: "ci", connector: "team/hub").get()
    }

    @Test func zeroMeansNoLimit() throws {
        let concurrency = RequestConcurrency(limits: RequestLimits(perIdentity: 0, perConnector: 0))
        let leases = try (0..<10_000).map { _ in try concurrency.admit(identity: "ci", connector: "team/hub").get() }
        #expect(concurrency.underWay(identity: "ci", connector: "team/hub") == (10_000, 10_000))
        withExtendedLifetime(leases) {}
    }

    @Test func aRefusalIsA429InTheRegistrysFormatWithRetryAfter() {
        let refusal = RequestConcurrency.LimitReached(limit: .identity, maximum: 2)
            .refusal(identity: "system:serviceaccount:team-a:builder", connector: "team-a/hub")
        #expect(refusal.status == .tooManyRequests)
        #expect(refusal.code == "TOOMANYREQUESTS")
        #expect(refusal.headers.first(name: "Retry-After") == "1")
        #expect(refusal.message.contains("system:serviceaccount:team-a:builder has 2 requests under way"))
        let byConnector = RequestConcurrency.LimitReached(limit: .connector, maximum: 5)
            .refusal(identity: "ci", connector: "team-a/hub")
        #expect(byConnector.message.contains("connector team-a/hub has 5 requests under way"))
    }

    // MARK: The request body's timeout, on a channel

    static let upload = "PUT /v2/a/blobs/uploads/1 HTTP/1.1\r\nHost: p\r\nContent-Length: 10\r\n\r\n"

    @Test func aBodyThatStopsArrivingIsAbandonedAndTheConnectionClosesAfterTheAnswer() throws {
        let starter = ClientConnectionTests.Starter()
        let (channel, _) = try ClientConnectionTests.channel(starter, bodyTimeout: .seconds(5))
        try channel.writeInbound(ByteBuffer(string: Self.upload + "abc"))
        let exchange = try #require(starter.exchanges.first)
        // Parts that keep coming keep it alive, however long the whole takes.
        for _ in 0..<3 {
            channel.embeddedEventLoop.advanceTime(by: .seconds(4))
            try channel.writeInbound(ByteBuffer(string: "d"))
        }
        #expect(!exchange.failed)
        channel.embeddedEventLoop.advanceTime(by: .seconds(5))
        #expect(exchange.failed)
        let timeout = try #require(exchange.failure as? RequestBodyTimeout)
        #expect(timeout.refusal.status == .requestTimeout)
        #expect(channel.isActive, "the connection closed before its answer")
        // Bytes that come late are not taken for a request.
        try channel.writeInbound(ByteBuffer(string: "efg"))
        #expect(starter.exchanges.count == 1)
        exchange.answer(.requestTimeout)
        channel.embeddedEventLoop.run()
        #expect(try ClientConnectionTests.written(channel).hasPrefix("HTTP/1.1 408 "))
        #expect(!channel.isActive, "the connection stayed open after an abandoned request")
    }

    @Test func aBodyTheProxyHoldsBackIsNotTimedOut() throws {
        let starter = ClientConnectionTests.Starter()
        let (channel, _) = try ClientConnectionTests.channel(starter, bodyTimeout: .seconds(5))
        try channel.writeInbound(ByteBuffer(string: Self.upload + "abc"))
        let exchange = try #require(starter.exchanges.first)
        let connection = try channel.pipeline.syncOperations.handler(type: ClientConnectionHandler.self)
        // The upstream takes its time: the proxy stops reading, for longer than the timeout.
        connection.pauseRequestBody()
        channel.embeddedEventLoop.advanceTime(by: .seconds(30))
        #expect(!exchange.failed)
        // Once it wants more, the client has the whole timeout again.
        connection.resumeRequestBody()
        channel.embeddedEventLoop.advanceTime(by: .seconds(4))
        #expect(!exchange.failed)
        try channel.writeInbound(ByteBuffer(string: "defghij"))
        #expect(exchange.ended)
        channel.embeddedEventLoop.advanceTime(by: .seconds(60))
        #expect(!exchange.failed)
        exchange.answer(.created)
        #expect(channel.isActive, "a whole request's connection was closed")
    }

    @Test func readsAndBodiesThatEndAreNotWatched() throws {
        let starter = ClientConnectionTests.Starter()
        let (channel, _) = try ClientConnectionTests.channel(starter, bodyTimeout: .seconds(1))
        try channel.writeInbound(ByteBuffer(string: "GET /v2/ HTTP/1.1\r\nHost: p\r\n\r\n"))
        channel.embeddedEventLoop.advanceTime(by: .seconds(10))
        let read = try #require(starter.exchanges.first)
        #expect(!read.failed)
        read.answer()
        try channel.writeInbound(ByteBuffer(string: Self.upload + "0123456789"))
        channel.embeddedEventLoop.run()
        let upload = try #require(starter.exchanges.last)
        #expect(upload.ended)
        channel.embeddedEventLoop.advanceTime(by: .seconds(10))
        #expect(!upload.failed)
    }

    /// A read may carry a body (it is dropped); one that stops arriving is no less held open.
    @Test func aReadWhoseBodyStopsArrivingIsAbandonedToo() throws {
        let starter = ClientConnectionTests.Starter()
        let (channel, _) = try ClientConnectionTests.channel(starter, bodyTimeout: .seconds(5))
        try channel.writeInbound(ByteBuffer(string: "GET /v2/ HTTP/1.1\r\nHost: p\r\nContent-Length: 10\r\n\r\nabc"))
        let read = try #require(starter.exchanges.first)
        read.answer()
        #expect(channel.isActive, "the body may still come")
        channel.embeddedEventLoop.advanceTime(by: .seconds(5))
        channel.embeddedEventLoop.run()
        #expect(!channel.isActive, "a connection whose read never sent its body stayed open")
    }

    @Test func abandoningARequestEndsItAndClosesAfterItsAnswer() {
        var state = ClientConnectionState()
        #expect(state.abandonRequest() == nil, "no request to abandon")
        _ = state.received(.head(HTTPRequestHead(version: .http1_1, method: .PUT, uri: "/")))
        #expect(state.abandonRequest() == ClientConnectionState.Completion.none)
        #expect(state.phase == .exchanging(requestEnded: true, responseEnded: false))
        #expect(state.abandonRequest() == nil, "abandoned twice")
        // What follows waits, and is dropped when the answer's end closes the connection.
        #expect(state.received(.body(ByteBuffer(string: "late"))) == .wait)
        #expect(state.responseEnded() == .close)

        // Abandoned after its answer was written: the connection closes now.
        var answered = ClientConnectionState()
        _ = answered.received(.head(HTTPRequestHead(version: .http1_1, method: .PUT, uri: "/")))
        #expect(answered.responseEnded() == ClientConnectionState.Completion.none)
        #expect(answered.abandonRequest() == .close)
    }
}
