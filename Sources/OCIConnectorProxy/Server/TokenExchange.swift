import Foundation
import NIOCore
import NIOHTTP1
import OCIProxyToken
import OCIReference

/// Answers the proxy's token endpoint (``TokenRequest``): authenticates the credentials (a
/// service account token or a proxy token, as the Basic password or in the OAuth2 form),
/// narrows the requested scopes to what they grant, and answers a short-lived proxy token in
/// the distribution token format (`token`, `access_token`, `expires_in`, `issued_at`).
///
/// Credentials that do not verify get 401; scopes they do not grant are left out of the token,
/// so the request that needs them is refused (403) as it would be with the credentials
/// themselves. A `POST`'s form is read up to ``formLimit`` bytes.
final class TokenExchange: ClientExchange {
    static let formLimit = 16 * 1024

    private let head: HTTPRequestHead
    private let query: Substring?
    private let log: RequestLog
    private unowned let connection: ClientConnectionHandler
    private let proxy: ConnectorProxy
    private let signer: ProxyTokenSigner
    private var form: ByteBuffer?
    private var done = false
    private var task: Task<Void, Never>?

    init(
        head: HTTPRequestHead, query: Substring?, log: RequestLog, connection: ClientConnectionHandler, proxy: ConnectorProxy,
        signer: ProxyTokenSigner
    ) {
        self.head = head
        self.query = query
        self.log = log
        self.connection = connection
        self.proxy = proxy
        self.signer = signer
        if head.method == .POST { form = ByteBuffer() }
    }

    /// Starts on a `GET` at once; a `POST` once its form has arrived.
    func start() {
        if form == nil { answer() }
    }

    private func answer() {
        let request: TokenRequest
        do {
            request = try TokenRequest(query: query, form: form.map { String(buffer: $0) })
        } catch {
            return finish(LocalAnswer(error, log: log))
        }
        let authenticator = proxy.snapshot.authenticator
        let header = request.authorization(header: head.headers.first(name: "Authorization"))
        do {
            switch try authenticator.authenticate(authorization: header) {
            case .granted(let grant):
                finish(issue(request, for: grant))
            case .verifyFirst(let pending):
                let exchange = NIOLoopBound(self, eventLoop: connection.eventLoop)
                task = Task {
                    let result = await pending.run()
                    exchange.eventLoop.execute {
                        let exchange = exchange.value
                        exchange.task = nil
                        switch result {
                        case .success(let grant): exchange.finish(exchange.issue(request, for: grant))
                        case .failure(let refusal): exchange.finish(LocalAnswer(refusal, log: exchange.log))
                        }
                    }
                }
            }
        } catch {
            finish(LocalAnswer(error, log: log))
        }
    }

    /// A token for what `grant` allows of the request's scopes.
    private func issue(_ request: TokenRequest, for grant: ClientGrant) -> LocalAnswer {
        log.update { fields in
            fields.identity = grant.identity
            fields.pod = grant.pod
        }
        let host = head.headers.first(name: "Host") ?? "localhost"
        let access = request.access(granted: grant) { name in proxy.tokenScopeTarget(name, host: host) }
        let now = Date()
        let lifetime = max(0, min(proxy.configuration.tokenLifetime, grant.expiresAt - Int(now.timeIntervalSince1970)))
        let token = signer.sign(ProxyTokenClaims(subject: grant.identity, access: access, lifetime: lifetime, now: now))
        let issued = ISO8601DateFormatter().string(from: now)
        let body = #"{"access_token":"\#(token)","expires_in":\#(lifetime),"issued_at":"\#(issued)","token":"\#(token)"}"#
        return LocalAnswer(
            status: .ok, headers: ["Content-Type": "application/json", "Cache-Control": "no-store"], body: body, detail: nil,
            log: log)
    }

    private func finish(_ answer: LocalAnswer) {
        guard !done else { return }
        done = true
        guard connection.isActive else { return log.finish(status: 499, detail: "the client closed the connection") }
        connection.writeAnswer(answer, method: head.method)
    }

    // MARK: ClientExchange

    func requestBodyPart(_ buffer: ByteBuffer) {
        guard var form else { return }  // A GET's body, if any, is not read.
        guard form.readableBytes + buffer.readableBytes <= Self.formLimit else {
            self.form = nil
            return finish(
                LocalAnswer(
                    RegistryErrorResponse(.payloadTooLarge, "SIZE_INVALID", "the token request's form is over 16 KiB"), log: log))
        }
        var buffer = buffer
        form.writeBuffer(&buffer)
        self.form = form
    }

    func requestEnded() {
        if form != nil, !done { answer() }
    }

    func requestFailed(_ error: any Error) {
        let refusal =
            (error as? RequestBodyTimeout)?.refusal
            ?? RegistryErrorResponse(.badRequest, "UNSUPPORTED", "the token request did not arrive whole")
        finish(LocalAnswer(refusal, log: log))
    }

    func clientWritable() {}

    func clientClosed() {
        task?.cancel()
        task = nil
        if !done {
            done = true
            log.finish(status: 499, detail: "the client closed the connection")
        }
    }
}
