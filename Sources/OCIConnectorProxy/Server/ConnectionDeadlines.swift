import NIOCore

/// When a client connection that is not being answered must be closed: a state machine of
/// three phases, fed the connection's events with their times, and asked what has expired.
///
/// - `idle`: no request under way and no byte of the next one yet; it ends after the idle timeout.
/// - `readingHead`: the first bytes of a request arrived; the whole head must follow within the
///   header timeout, or the connection is answered `408` and closed.
/// - `busy`: requests are being answered (bodies included); no deadline here.
///
/// Bytes that arrive while busy (a pipelined request, or an upload's body) do not start the
/// header timeout: once the answers are out the connection is idle again, and a request that
/// was already under way is taken up at once.
struct ConnectionDeadlines: Equatable {
    enum Phase: Equatable {
        case idle(since: NIODeadline)
        case readingHead(since: NIODeadline)
        case busy(requests: Int)
    }

    /// What expired.
    enum Expiry: Equatable {
        /// The connection waited too long for a request: close it without an answer.
        case idle
        /// A request head took too long: answer `408` and close.
        case header
    }

    let headerTimeout: TimeAmount
    let idleTimeout: TimeAmount
    private(set) var phase: Phase

    init(headerTimeout: TimeAmount, idleTimeout: TimeAmount, openedAt now: NIODeadline) {
        self.headerTimeout = headerTimeout
        self.idleTimeout = idleTimeout
        self.phase = .idle(since: now)
    }

    /// Bytes arrived from the client.
    mutating func bytesRead(at now: NIODeadline) {
        if case .idle = phase { phase = .readingHead(since: now) }
    }

    /// A request's head is complete and it is being answered.
    mutating func requestStarted() {
        if case .busy(let requests) = phase {
            phase = .busy(requests: requests + 1)
        } else {
            phase = .busy(requests: 1)
        }
    }

    /// A request's answer is complete.
    mutating func requestEnded(at now: NIODeadline) {
        guard case .busy(let requests) = phase else { return }
        phase = requests > 1 ? .busy(requests: requests - 1) : .idle(since: now)
    }

    /// When the current phase expires; `nil` while busy.
    var deadline: NIODeadline? {
        switch phase {
        case .idle(let since): since + idleTimeout
        case .readingHead(let since): since + headerTimeout
        case .busy: nil
        }
    }

    /// What has expired at `now`, if anything.
    func expiry(at now: NIODeadline) -> Expiry? {
        guard let deadline, now >= deadline else { return nil }
        if case .readingHead = phase { return .header }
        return .idle
    }
}

/// What the handlers that answer requests tell the ``ConnectionGuard`` in front of them, as an
/// outbound user event: one `started` and one `ended` per request answered.
enum RequestActivity {
    case started
    case ended
}
