import NIOCore
import NIOHTTP1
import OCIAuth
import OCIBlobForwarder

/// A `GET` or `HEAD` of a manifest, a blob, a tag list or referrers, answered on the client
/// connection's event loop from start to end: no task per request, and no thread switch per
/// buffer (the upstream connection is on the same loop).
///
/// It finishes what it starts:
/// - the upstream's `Authorization` is at hand, or asked for once (concurrent first reads of a
///   scope share one token request, the token cache's);
/// - a 401 is answered by renewing the credentials and sending the read once more (a read
///   changes nothing upstream); a second 401 is 403 `DENIED`;
/// - redirects are followed, up to ``redirectLimit``: to the upstream's own origin with its
///   credentials, to any other (object storage, where registries keep blobs) without them, on a
///   connection of that origin's own (``StorageFetchers``); unless the connector passes
///   redirects on to the client;
/// - the answer is relayed with its locations rewritten for the client, its body buffer by
///   buffer, reading the upstream only while the client connection is writable.
final class ReadRelay: ClientExchange {
    /// The most redirects followed for one read: more is a loop, or a registry misconfigured.
    static let redirectLimit = 5

    /// The most of an unwanted body (an error or a redirect) read to keep its connection: a
    /// larger one is dropped unread, which closes its connection.
    static let drainLimit = 64 * 1024

    private enum State {
        /// Waiting for the upstream's `Authorization`.
        case authorizing
        /// Waiting for an answer's head (from the upstream, or where it redirected).
        case asking
        /// Relaying the answer's body.
        case relaying(RelayedBody)
        case done
    }

    private let plan: UpstreamPlan
    private unowned let connection: ClientConnectionHandler
    private var state = State.authorizing
    /// The upstream's `Authorization`, once known, and whether it was renewed after a 401.
    private var authorization: UpstreamClient.Authorization?
    private var retried = false
    private var hops = 0
    private var status = 0

    init(plan: UpstreamPlan, connection: ClientConnectionHandler) {
        self.plan = plan
        self.connection = connection
    }

    /// Sends the read upstream.
    func start() {
        let client = plan.upstream.client
        if let ready = client.readyAuthorization(for: plan.scopes) {
            authorized(ready)
            return
        }
        let scopes = plan.scopes
        connection.eventLoop.makeFutureWithTask { try await client.authorization(for: scopes) }
            .assumeIsolated()
            .whenComplete { [self] result in
                guard case .authorizing = state else { return }
                switch result {
                case .success(let authorization): authorized(authorization)
                case .failure(let error): fail(error)
                }
            }
    }

    private func authorized(_ authorization: UpstreamClient.Authorization) {
        self.authorization = authorization
        var headers = plan.headers
        // The plan's headers hold no `Authorization` (the client's is the proxy token).
        if let value = authorization.headerValue { headers.add(name: "Authorization", value: value) }
        ask(plan.upstream.reads, plan.target, headers: headers, onOrigin: true)
    }

    /// Sends the read to `fetcher` and takes up its answer.
    private func ask(_ fetcher: RegistryReader, _ target: String, headers: HTTPHeaders, onOrigin: Bool) {
        state = .asking
        let asked = NIODeadline.now()
        fetcher.startRelay(plan.method, target, headers: headers, on: connection.eventLoop)
            .assumeIsolated()
            .whenComplete { [self] result in
                guard case .asking = state else {
                    if case .success(let response) = result { response.body.drop() }
                    return
                }
                switch result {
                case .success(let response):
                    plan.upstreamAnswered(after: (NIODeadline.now() - asked).nanoseconds)
                    answered(response, headers: headers, onOrigin: onOrigin)
                case .failure(let error): fail(error)
                }
            }
    }

    private func answered(_ response: RelayedResponse, headers: HTTPHeaders, onOrigin: Bool) {
        let upstream = plan.upstream
        let code = response.head.status.code
        if code == 401 {
            discard(response.body)
            guard onOrigin else {
                // Object storage refusing its own signed URL: nothing the client could fix.
                return fail(upstream.unavailable("the storage the upstream redirected to refused the read (401)"))
            }
            return renew(after: response.head.headers, headers: headers)
        }
        if (300..<400).contains(code), !upstream.passRedirects, let location = response.head.headers.first(name: "Location") {
            discard(response.body)
            return follow(location, headers: headers)
        }
        relay(response)
    }

    /// After a 401: new credentials from the challenge, and the read once more; or 403.
    private func renew(after challenge: HTTPHeaders, headers: HTTPHeaders) {
        guard !retried, let rejected = authorization else { return fail(plan.upstream.refused(plan.scopes)) }
        retried = true
        state = .authorizing
        let (client, scopes) = (plan.upstream.client, plan.scopes)
        connection.eventLoop.makeFutureWithTask { try await client.recover(from: challenge, rejected: rejected, scopes: scopes) }
            .assumeIsolated()
            .whenComplete { [self] result in
                guard case .authorizing = state else { return }
                switch result {
                case .success(let value?):
                    var headers = headers
                    headers.replaceOrAdd(name: "Authorization", value: value)
                    ask(plan.upstream.reads, plan.target, headers: headers, onOrigin: true)
                case .success(nil):
                    fail(plan.upstream.refused(plan.scopes))
                case .failure(let error):
                    fail(error)
                }
            }
    }

    /// Follows a redirect: with the upstream's credentials on its own origin, without elsewhere.
    private func follow(_ location: String, headers: HTTPHeaders) {
        let upstream = plan.upstream
        hops += 1
        guard hops <= Self.redirectLimit else {
            return fail(upstream.unavailable("the upstream redirected more than \(Self.redirectLimit) times"))
        }
        let base = upstream.client.connector.address.baseURL
        if location.hasPrefix("/") || location.hasPrefix(base + "/") {
            let target = location.hasPrefix("/") ? location : String(location.dropFirst(base.count))
            guard StorageLocation.isRequestTarget(target) else {
                return fail(upstream.unavailable("the upstream redirected to a location that is not a valid request target"))
            }
            return ask(upstream.reads, target, headers: headers, onOrigin: true)
        }
        // The location itself may hold a signature, so it is not repeated in the error.
        guard let (storage, target) = upstream.storage.fetcher(for: location) else {
            return fail(upstream.unavailable("the upstream redirected to a location the proxy does not follow"))
        }
        var storageHeaders = headers
        storageHeaders.remove(name: "Authorization")
        ask(storage, target, headers: storageHeaders, onOrigin: false)
    }

    /// Relays the answer: its head now, with locations rewritten, its body as it comes.
    private func relay(_ response: RelayedResponse) {
        guard connection.isActive else {
            response.body.drop()
            return clientClosed()
        }
        let head = response.head
        var headers = HTTPHeaders()
        headers.reserveCapacity(head.headers.count)
        ConnectorProxy.forEachClientHeader(head.headers, origin: plan.origin, prefix: plan.prefix, upstream: plan.upstream) {
            headers.add(name: $0, value: $1)
        }
        status = Int(head.status.code)
        connection.writeHead(head.status, headers)
        state = .relaying(response.body)
        response.body.relay(to: self)
    }

    /// Answers with the registry error that `error` amounts to.
    private func fail(_ error: any Error) {
        let refusal: RegistryErrorResponse
        switch error {
        case let error as RegistryErrorResponse: refusal = error
        case let error as AuthError: refusal = plan.upstream.failure(error, scopes: plan.scopes)
        case let error as RegistryReadError where error.kind == .timedOut: refusal = plan.upstream.timedOut(error.reason)
        case let error as RegistryReadError: refusal = plan.upstream.unavailable(error.reason)
        default: refusal = plan.upstream.unavailable("\(error)")
        }
        state = .done
        guard connection.isActive else { return plan.log.finish(status: 499, detail: "the client closed the connection") }
        connection.writeAnswer(LocalAnswer(refusal, log: plan.log), method: plan.method)
    }

    /// Reads and drops a small body, so its connection can be reused.
    private func discard(_ body: RelayedBody) {
        body.relay(to: Discard(body: body, limit: Self.drainLimit))
    }

    // MARK: ClientExchange

    func requestBodyPart(_ buffer: ByteBuffer) {}  // A read has no body to speak of.

    func requestEnded() {}

    func requestFailed(_ error: any Error) {}

    func clientWritable() {
        if case .relaying(let body) = state { body.resume() }
    }

    func clientClosed() {
        switch state {
        case .relaying(let body):
            body.drop()
            plan.log.finish(status: status, detail: "aborted: the client closed the connection")
        case .authorizing, .asking:
            plan.log.finish(status: 499, detail: "the client closed the connection")
        case .done:
            break
        }
        state = .done
    }
}

extension ReadRelay: BodySink {
    func bodyPart(_ buffer: ByteBuffer) -> Bool {
        guard case .relaying = state else { return false }
        plan.log.bytesOut.add(buffer.readableBytes)
        return connection.writeBodyPart(buffer)
    }

    func bodyEnded(_ error: RegistryReadError?) {
        guard case .relaying = state else { return }
        state = .done
        if let error {
            // The client has part of the body and no way to learn it is cut short but this.
            plan.log.finish(status: status, detail: "aborted: \(error.kind)")
            return connection.abort()
        }
        plan.log.finish(status: status)
        connection.writeEnd()
    }
}

/// Reads and drops a small body (an error or a redirect), up to a limit, so its connection can
/// be reused.
final class Discard: BodySink {
    private let body: RelayedBody
    private let limit: Int
    private var seen = 0

    init(body: RelayedBody, limit: Int) {
        self.body = body
        self.limit = limit
    }

    func bodyPart(_ buffer: ByteBuffer) -> Bool {
        seen += buffer.readableBytes
        if seen > limit { body.drop() }
        return true
    }

    func bodyEnded(_ error: RegistryReadError?) {}
}
