import NIOCore
import NIOHTTP1

/// One client connection's exchanges, as a value: which request is being answered, what waits
/// behind it, and when the connection reads, in the manner of swift-nio's
/// `HTTPServerPipelineHandler`. ``ClientConnectionHandler`` drives it and does what it returns.
///
/// Requests are answered one at a time, in order. The parts of requests pipelined behind the one
/// being answered wait here, and the connection reads no more until they are taken up, so a
/// client cannot make the proxy hold more than one read of them. The body of the request being
/// answered goes to its exchange as it arrives; while the exchange has enough, reading pauses.
struct ClientConnectionState {
    enum Phase: Equatable {
        /// No request is being answered.
        case idle
        /// A request is being answered: its head has arrived; its end and its answer's end may have.
        case exchanging(requestEnded: Bool, responseEnded: Bool)
        /// The connection closes: nothing more is taken up.
        case closing
    }

    private(set) var phase = Phase.idle
    /// Parts of requests that came while another was being answered.
    private(set) var waiting = CircularBuffer<HTTPServerRequestPart>()
    /// A read was asked for while reading was held.
    private(set) var readHeld = false
    /// The exchange wants no more of the request's body for now.
    private(set) var bodyPaused = false
    /// The server is shutting down: the connection closes after the answer under way.
    private(set) var quiescing = false

    /// Whether the request being answered still waits for its answer's end.
    var isAnswering: Bool {
        if case .exchanging(_, responseEnded: false) = phase { return true }
        return false
    }

    /// What to do with a part that arrived.
    enum PartAction: Equatable {
        /// A request starts: decide what to do with it and start its exchange.
        case start(HTTPRequestHead)
        /// A part of the body of the request being answered.
        case body(ByteBuffer)
        /// The request being answered ended; then `completion`.
        case end(then: Completion)
        /// It waits for the exchange under way.
        case wait
        /// The connection is closing: it is dropped.
        case drop
    }

    /// What follows the end of an exchange's request or answer.
    enum Completion: Equatable {
        /// The exchange goes on.
        case none
        /// The exchange is complete: take up the parts that waited, on the next turn of the loop.
        case takeUpWaiting
        /// The exchange is complete and the connection closes.
        case close
    }

    enum ReadAction: Equatable {
        case read
        case hold
    }

    /// A request part arrived from the decoder.
    mutating func received(_ part: HTTPServerRequestPart) -> PartAction {
        switch phase {
        case .closing:
            return .drop
        case .exchanging(requestEnded: true, _):
            waiting.append(part)
            return .wait
        case .idle:
            guard waiting.isEmpty else {
                waiting.append(part)
                return .wait
            }
            return take(part)
        case .exchanging(requestEnded: false, _):
            return take(part)
        }
    }

    /// The next part that waited, if it can be taken up now, and what to do with it.
    mutating func nextWaiting() -> PartAction? {
        switch phase {
        case .idle, .exchanging(requestEnded: false, _):
            guard let part = waiting.popFirst() else { return nil }
            return take(part)
        case .exchanging(requestEnded: true, _), .closing:
            return nil
        }
    }

    private mutating func take(_ part: HTTPServerRequestPart) -> PartAction {
        switch (part, phase) {
        case (.head(let head), .idle):
            phase = .exchanging(requestEnded: false, responseEnded: false)
            bodyPaused = false
            return .start(head)
        case (.body(let buffer), .exchanging(requestEnded: false, _)):
            return .body(buffer)
        case (.end, .exchanging(requestEnded: false, let responseEnded)):
            phase = .exchanging(requestEnded: true, responseEnded: responseEnded)
            bodyPaused = false
            return .end(then: responseEnded ? complete() : .none)
        default:
            // NIO's decoder sends head, body, end in order: anything else is not a request.
            phase = .closing
            return .drop
        }
    }

    /// The end of the answer was written.
    mutating func responseEnded() -> Completion {
        guard case .exchanging(let requestEnded, _) = phase else { return .none }
        phase = .exchanging(requestEnded: requestEnded, responseEnded: true)
        return requestEnded ? complete() : .none
    }

    private mutating func complete() -> Completion {
        if quiescing {
            phase = .closing
            waiting.removeAll()
            return .close
        }
        phase = .idle
        return .takeUpWaiting
    }

    /// Whether anything waits to be taken up after an exchange: parts of requests, or a read.
    var hasWaiting: Bool { !waiting.isEmpty || readHeld }

    /// The channel asks for a read.
    mutating func readRequested() -> ReadAction {
        if waiting.isEmpty, !bodyPaused, phase != .closing { return .read }
        readHeld = true
        return .hold
    }

    /// Whether a read held back is due now.
    mutating func heldReadDue() -> Bool {
        guard readHeld, waiting.isEmpty, !bodyPaused, phase != .closing else { return false }
        readHeld = false
        return true
    }

    /// The exchange has enough of the request's body for now.
    mutating func pauseBody() {
        if case .exchanging(requestEnded: false, _) = phase { bodyPaused = true }
    }

    /// The exchange wants more of the body: a held read is due, if any.
    mutating func resumeBody() -> ReadAction {
        bodyPaused = false
        return heldReadDue() ? .read : .hold
    }

    /// The server asks connections to close once idle: `.close` now, or after the answer under way.
    mutating func quiesce() -> Completion {
        switch phase {
        case .idle:
            phase = .closing
            waiting.removeAll()
            return .close
        case .exchanging:
            quiescing = true
            return .none
        case .closing:
            return .none
        }
    }

    /// The request's body will not be read to its end (it stopped arriving, or its upstream
    /// stopped taking it): the request counts
    /// as ended, nothing that follows it on the connection is taken up, and the connection
    /// closes once the answer is written (`.close` now if it has been). `nil` when no request's
    /// body is awaited.
    mutating func abandonRequest() -> Completion? {
        guard case .exchanging(requestEnded: false, let responseEnded) = phase else { return nil }
        quiescing = true
        bodyPaused = false
        phase = .exchanging(requestEnded: true, responseEnded: responseEnded)
        return responseEnded ? complete() : Completion.none
    }

    /// The connection closed or failed.
    mutating func closed() {
        phase = .closing
        waiting.removeAll()
    }
}
