import NIOCore
import NIOHTTP1

/// A request whose client's service account token must be verified before it can be decided
/// (its issuer's keys may have to be fetched): reading its body pauses, the token is verified
/// off the event loop, and the request is decided again and handed to the exchange that answers
/// it, with what arrived of its body meanwhile. A refused token is answered here (401).
///
/// Only a token's first request waits: its grant is remembered until it expires.
final class VerifyingExchange: ClientExchange {
    private let head: HTTPRequestHead
    private let log: RequestLog
    private unowned let connection: ClientConnectionHandler
    private let starter: ConnectorProxy
    /// Body parts that arrived before the request was decided, and whether it ended.
    private var held: [ByteBuffer] = []
    private var ended = false
    private var failure: (any Error)?
    private var writable = false
    /// The exchange that answers, once decided; `nil` before, and when the answer was immediate.
    private var next: (any ClientExchange)?
    private var decided = false
    private var closed = false
    private var task: Task<Void, Never>?

    init(head: HTTPRequestHead, log: RequestLog, connection: ClientConnectionHandler, starter: ConnectorProxy) {
        self.head = head
        self.log = log
        self.connection = connection
        self.starter = starter
    }

    func start(_ pending: ClientAuthenticator.PendingVerification) {
        connection.pauseRequestBody()
        let exchange = NIOLoopBound(self, eventLoop: connection.eventLoop)
        task = Task {
            let result = await pending.run()
            exchange.eventLoop.execute { exchange.value.verified(result) }
        }
    }

    private func verified(_ result: Result<ClientGrant, RegistryErrorResponse>) {
        task = nil
        guard !closed else { return }
        decided = true
        switch result {
        case .failure(let refusal):
            connection.writeAnswer(LocalAnswer(refusal, log: log), method: head.method)
        case .success:
            // Decided again: the grant is remembered now.
            next = starter.startExchange(for: head, on: connection, log: log)
            for buffer in held { next?.requestBodyPart(buffer) }
            held = []
            if let failure {
                next?.requestFailed(failure)
            } else if ended {
                next?.requestEnded()
            }
            if writable { next?.clientWritable() }
        }
        connection.resumeRequestBody()
    }

    // MARK: ClientExchange

    func requestBodyPart(_ buffer: ByteBuffer) {
        if decided { next?.requestBodyPart(buffer) } else { held.append(buffer) }
    }

    func requestEnded() {
        if decided { next?.requestEnded() } else { ended = true }
    }

    func requestFailed(_ error: any Error) {
        if decided { next?.requestFailed(error) } else { failure = error }
    }

    func clientWritable() {
        if decided { next?.clientWritable() } else { writable = true }
    }

    func clientClosed() {
        closed = true
        if let next {
            next.clientClosed()
        } else if !decided {
            task?.cancel()
            task = nil
            log.finish(status: 499, detail: "the client closed the connection")
        }
    }
}
