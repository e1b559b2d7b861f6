import AsyncHTTPClient
import NIOCore
import NIOHTTP1
import OCIAuth
import OCIBlobForwarder
import Synchronization

/// Everything that goes upstream but a read: uploads, deletes, upload status, the catalog.
///
/// The request's body streams upstream as it arrives, pulled by the upstream connection: the
/// client connection reads at most ``bodyPartsAhead`` parts ahead of the upstream, then pauses
/// until it catches up. A client that waits for `100 Continue` is told to send at once, as nginx
/// does, since the upstream is asked only once the body flows. The upstream's answer is relayed
/// with its locations rewritten for the client, each buffer written before the next is read.
/// An exchange runs the upstream side in a task of its own (the HTTP client's interface is
/// async) and writes on the client connection's event loop.
final class ForwardExchange: ClientExchange {
    /// Request body parts read ahead of the upstream: two keep an upload streaming, and 16
    /// concurrent pushes peaked at 50–64 MiB of heap instead of 72–82 with ten (Performance.md).
    static let bodyPartsAhead = NIOAsyncSequenceProducerBackPressureStrategies.HighLowWatermark(lowWatermark: 1, highWatermark: 2)

    typealias Body = NIOThrowingAsyncSequenceProducer<
        ByteBuffer, any Error, NIOAsyncSequenceProducerBackPressureStrategies.HighLowWatermark, Demand
    >

    /// Tells the client connection when the upstream wants more of the body.
    struct Demand: NIOAsyncSequenceProducerDelegate {
        let exchange: NIOLoopBound<ForwardExchange>

        func produceMore() {
            let exchange = exchange
            exchange.eventLoop.execute { exchange.value.upstreamWantsMore() }
        }

        func didTerminate() {}
    }

    private let plan: UpstreamPlan
    fileprivate unowned let connection: ClientConnectionHandler
    private var source: Body.Source?
    /// Set when the request was abandoned before its body was whole (it stopped arriving, or
    /// the upstream stopped taking it): the upstream request fails for it, and the client is
    /// answered the reason's refusal (`408`, `504`) rather than a `502` for the upstream.
    private let abandoned = Abandoned()

    /// Where the event loop leaves the reason a request was abandoned for the exchange's task.
    private final class Abandoned: Sendable {
        let reason = Mutex<(any RequestAbandonment)?>(nil)
    }
    private var task: Task<Void, Never>?
    private var finished = false
    /// How long the upstream may take none of the body (``UpstreamTimeouts/response``).
    private let stallTimeout: TimeAmount
    /// Since when the upstream has taken none of the body (`nil`: it wants more).
    private var pausedSince: NIODeadline?
    /// The check of ``stallTimeout``: one at a time, moved on by the pauses that come and go
    /// meanwhile rather than re-armed for each (an upload pauses every few parts).
    private var stallCheck: Scheduled<Void>?

    init(plan: UpstreamPlan, connection: ClientConnectionHandler, stallTimeout: TimeAmount) {
        self.plan = plan
        self.connection = connection
        self.stallTimeout = stallTimeout
    }

    /// Starts the upstream request; `work` is what the task does with the plan and the body.
    func start(_ work: @escaping @Sendable (UpstreamPlan, Body?) async throws -> ForwardedAnswer) {
        let body = plan.hasBody ? requestBody() : nil
        let exchange = NIOLoopBound(self, eventLoop: connection.eventLoop)
        let plan = plan
        let abandoned = abandoned
        task = Task {
            var answer = await ForwardExchange.answer(work, plan: plan, body: body)
            if case .local = answer, let reason = abandoned.reason.withLock({ $0 }) {
                answer = .local(LocalAnswer(reason.refusal, log: plan.log))
            }
            await ForwardExchange.write(answer, plan: plan, to: exchange)
        }
    }

    /// The request's body as the upstream request reads it; a client that waits for
    /// `100 Continue` is told to send it.
    private func requestBody() -> Body {
        let new = Body.makeSequence(
            elementType: ByteBuffer.self, failureType: (any Error).self, backPressureStrategy: Self.bodyPartsAhead,
            finishOnDeinit: false, delegate: Demand(exchange: NIOLoopBound(self, eventLoop: connection.eventLoop)))
        source = new.source
        if plan.expectsContinue { connection.writeContinue() }
        return new.sequence
    }

    /// What `work` answers, or the error it throws as the registry would answer it.
    private static func answer(
        _ work: @Sendable (UpstreamPlan, Body?) async throws -> ForwardedAnswer, plan: UpstreamPlan, body: Body?
    ) async -> ForwardedAnswer {
        do {
            return try await work(plan, body)
        } catch let error as RegistryErrorResponse {
            return .local(LocalAnswer(error, log: plan.log))
        } catch {
            return .local(LocalAnswer(plan.upstream.unavailable("\(error)"), log: plan.log))
        }
    }

    /// Writes the answer to the client, each body buffer once the previous one is written.
    private static func write(_ answer: ForwardedAnswer, plan: UpstreamPlan, to exchange: NIOLoopBound<ForwardExchange>) async {
        let eventLoop = exchange.eventLoop
        switch answer {
        case .local(let local):
            eventLoop.execute {
                guard let connection = exchange.value.writing() else { return }
                connection.writeAnswer(local, method: plan.method)
            }
        case .upstream(let status, let headers, let body):
            let started = eventLoop.submit {
                guard let connection = exchange.value.writing() else { return false }
                connection.writeHead(status, headers)
                return true
            }
            guard (try? await started.get()) == true else { return }
            var failure: (any Error)?
            if let body {
                do {
                    for try await buffer in body {
                        plan.log.bytesOut.add(buffer.readableBytes)
                        let written = eventLoop.makePromise(of: Void.self)
                        eventLoop.execute {
                            guard exchange.value.task != nil else { return written.fail(ChannelError.ioOnClosedChannel) }
                            exchange.value.connection.writeBodyPart(buffer, promise: written)
                        }
                        try await written.futureResult.get()
                    }
                } catch {
                    failure = error
                }
            }
            let failed = failure
            eventLoop.execute {
                let exchange = exchange.value
                guard exchange.task != nil, !exchange.finished else { return }
                exchange.finished = true
                if let failed {
                    plan.log.finish(status: Int(status.code), detail: "aborted: \(type(of: failed))")
                    exchange.connection.abort()
                } else {
                    plan.log.finish(status: Int(status.code))
                    exchange.connection.writeEnd()
                }
            }
        }
    }

    /// The connection to write the answer on, unless the client has gone.
    private func writing() -> ClientConnectionHandler? {
        guard task != nil, !finished, connection.isActive else { return nil }
        return connection
    }

    // MARK: ClientExchange

    func requestBodyPart(_ buffer: ByteBuffer) {
        guard let source else { return }  // The upstream is done with the body: the rest is dropped.
        switch source.yield(buffer) {
        case .produceMore: break
        case .stopProducing:
            connection.pauseRequestBody()
            watchForStall()
        case .dropped: self.source = nil
        }
    }

    func requestEnded() {
        stopWatchingForStall()
        source?.finish()
        source = nil
    }

    func requestFailed(_ error: any Error) {
        stopWatchingForStall()
        if let reason = error as? any RequestAbandonment { abandoned.reason.withLock { $0 = reason } }
        source?.finish(error)
        source = nil
    }

    // MARK: An upstream that stops taking the body

    private func watchForStall() {
        pausedSince = connection.eventLoop.now
        if stallCheck == nil { scheduleStallCheck() }
    }

    private func scheduleStallCheck() {
        guard let pausedSince else { return }
        stallCheck = connection.eventLoop.assumeIsolated().scheduleTask(deadline: pausedSince + stallTimeout) { [self] in
            stallCheck = nil
            checkForStall()
        }
    }

    /// The check is due: the upstream stalled if it has still taken nothing since the pause
    /// the deadline was counted from; otherwise the check moves to the current pause, if any.
    private func checkForStall() {
        guard let pausedSince else { return }
        guard connection.eventLoop.now >= pausedSince + stallTimeout else { return scheduleStallCheck() }
        self.pausedSince = nil
        connection.abandonRequest(UpstreamBodyStall(timeout: stallTimeout))
        // The upstream request waits for a write the upstream will not take: only cancelling
        // it ends it.
        task?.cancel()
    }

    private func stopWatchingForStall() {
        pausedSince = nil
        stallCheck?.cancel()
        stallCheck = nil
    }

    /// The upstream took what was read ahead and wants more.
    fileprivate func upstreamWantsMore() {
        pausedSince = nil  // A check still scheduled finds no pause, and ends.
        connection.resumeRequestBody()
    }

    func clientWritable() {}  // Each write is awaited.

    func clientClosed() {
        stopWatchingForStall()
        source?.finish(ChannelError.ioOnClosedChannel)
        source = nil
        if !finished {
            finished = true
            plan.log.finish(status: 499, detail: "the client closed the connection")
        }
        task?.cancel()
        task = nil
    }
}

/// What a forwarded request is answered with.
enum ForwardedAnswer: Sendable {
    /// The upstream's answer, its headers already as the client gets them.
    case upstream(HTTPResponseStatus, HTTPHeaders, HTTPClientResponse.Body?)
    /// An answer of the proxy's own.
    case local(LocalAnswer)
}

extension ConnectorProxy {
    /// Sends a forwarded request upstream with the connector's credentials, its body streamed
    /// from `body`, and returns the upstream's answer for the client.
    func forward(_ plan: UpstreamPlan, body: ForwardExchange.Body?) async throws(RegistryErrorResponse) -> ForwardedAnswer {
        let upstream = plan.upstream
        var outbound = HTTPClientRequest(url: upstream.client.url(plan.target))
        outbound.method = plan.method
        outbound.headers = plan.headers
        if let body {
            outbound.body = BlobForwarder.upstreamBody(from: body, length: plan.contentLength, counter: plan.log.bytesIn)
        } else if [.PUT, .POST, .PATCH].contains(plan.method) {
            outbound.body = .bytes(ByteBuffer())
        }
        let response: HTTPClientResponse
        let asked = ContinuousClock.now
        do {
            // A body streams as fast as its client sends it: only the request timeout bounds it
            // (and the client's body timeout its pauses), not the upstream's answer timeout.
            let timeout = plan.hasBody ? configuration.requestTimeout : configuration.upstreamTimeouts.response
            response = try await upstream.client.execute(
                outbound, scopes: plan.scopes, replayable: !plan.hasBody, timeout: timeout)
            plan.upstreamAnswered(after: (ContinuousClock.now - asked).nanoseconds)
        } catch {
            throw upstream.failure(error, scopes: plan.scopes)
        }
        if response.status == .unauthorized {
            _ = try? await response.body.collect(upTo: ReadRelay.drainLimit)
            throw upstream.refused(plan.scopes)
        }
        var headers = HTTPHeaders()
        Self.forEachClientHeader(response.headers, origin: plan.origin, prefix: plan.prefix, upstream: upstream) {
            headers.add(name: $0, value: $1)
        }
        let length = response.headers.first(name: "Content-Length")
        let bodiless = plan.method == .HEAD || length == "0" || response.status == .noContent || response.status == .notModified
        return .upstream(response.status, headers, bodiless ? nil : response.body)
    }
}
