import Crypto
import Foundation
import Hummingbird
import Logging
import _CryptoExtras

/// A small token server for distribution token auth, on loopback: it signs RS256 JWTs with a key
/// whose certificate is in the registry's `rootcertbundle`, so the registry verifies them for
/// real.
///
/// It speaks the GET form (Basic credentials, one `scope` per parameter) and the OAuth2 POST form
/// (`grant_type=password` and `refresh_token`), counts the requests it serves, and grants each
/// user the actions its policy allows.
public final class TokenIssuer: Sendable {
    /// What a user may do: repository name → actions. `"*"` as the name matches every repository.
    public typealias Policy = [String: Set<String>]

    /// A user of the token server.
    public struct User: Sendable {
        public var password: String
        public var policy: Policy

        public init(password: String, policy: Policy = ["*": ["pull", "push", "delete"]]) {
            self.password = password
            self.policy = policy
        }
    }

    /// Token requests served, by form.
    public struct Counts: Sendable, Equatable {
        public var get = 0
        public var post = 0
        public var refreshGrants = 0
        public var rejected = 0
        public var total: Int { self.get + self.post }
    }

    public let service = "test-registry"
    public let issuerName = "test-token-issuer"
    public let port: Int
    public let certificateFile: URL
    /// The realm URL registries point clients at.
    public var realm: String { "http://127.0.0.1:\(port)/token" }

    private let state: Locked<State>
    private let serverTask: Task<Void, any Error>

    struct State {
        var counts = Counts()
        var scopesRequested: [[String]] = []
        var expiresIn: Int
        var acceptPost: Bool
        var refreshTokens: [String: String] = [:]  // refresh token → user
        var outage: Outage?
        /// Seconds `exp` is dated back by.
        var expiryShift = 0
        /// The lifetime written into `exp`.
        var signedLifetime: Int { expiresIn - expiryShift }
    }

    /// How the issuer can fail, as token servers do.
    public enum Outage: Sendable {
        /// Every token request is answered 503.
        case failing
        /// Token requests are not answered (for 30 s, then 503).
        case silent
    }

    /// Starts an issuer.
    /// - Parameters:
    ///   - users: accounts and what each may do.
    ///   - expiresIn: the lifetime given to tokens, in seconds.
    ///   - acceptPost: whether the OAuth2 POST form is served (otherwise it answers 405).
    public static func start(users: [String: User], expiresIn: Int = 300, acceptPost: Bool = true) async throws -> TokenIssuer {
        let directory = try Loopback.temporaryDirectory("issuer")
        let key = directory.appendingPathComponent("key.pem")
        let certificate = directory.appendingPathComponent("cert.pem")
        try runCommand(
            "/usr/bin/openssl",
            [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key.path, "-out", certificate.path,
                "-days", "2", "-subj", "/CN=test-token-issuer",
            ])
        let signingKey = try _RSA.Signing.PrivateKey(pemRepresentation: String(contentsOf: key, encoding: .utf8))
        let certificatePEM = try String(contentsOf: certificate, encoding: .utf8)
        let certificateDER = certificatePEM.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined()
        return try await TokenIssuer(
            users: users, expiresIn: expiresIn, acceptPost: acceptPost, signingKey: signingKey,
            certificateDERBase64: certificateDER, certificateFile: certificate)
    }

    private init(
        users: [String: User], expiresIn: Int, acceptPost: Bool, signingKey: _RSA.Signing.PrivateKey,
        certificateDERBase64: String, certificateFile: URL
    ) async throws {
        let state = Locked(State(expiresIn: expiresIn, acceptPost: acceptPost))
        let signer = JWTSigner(
            key: signingKey, certificate: certificateDERBase64, issuer: "test-token-issuer", audience: "test-registry")
        let router = Router()
        router.get("token") { request, _ -> Response in
            switch state.withLock({ $0.outage }) {
            case .failing?: return Self.json(.serviceUnavailable, #"{"errors":[{"code":"UNAVAILABLE"}]}"#)
            case .silent?:
                try await Task.sleep(for: .seconds(30))
                return Self.json(.serviceUnavailable, #"{"errors":[{"code":"UNAVAILABLE"}]}"#)
            case nil: break
            }
            let query = request.uri.queryParameters
            let scopes = query[values: "scope"].map(String.init)
            let user = Self.basicUser(request.headers[.authorization], users: users)
            return state.withLock { state -> Response in
                state.counts.get += 1
                state.scopesRequested.append(scopes)
                guard let (name, account) = user else {
                    state.counts.rejected += 1
                    return Self.json(.unauthorized, #"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#)
                }
                let token = signer.sign(
                    subject: name, access: Self.grant(scopes, policy: account.policy), lifetime: state.signedLifetime)
                SecretEvidence.record(token)
                return Self.json(.ok, #"{"token":"\#(token)","expires_in":\#(state.expiresIn),"issued_at":"\#(Self.now())"}"#)
            }
        }
        router.post("token") { request, _ -> Response in
            let body = try await request.body.collect(upTo: 64 * 1024)
            let form = Self.parseForm(String(buffer: body))
            let scopes = (form["scope"] ?? "").split(separator: " ").map(String.init)
            return state.withLock { state -> Response in
                guard state.acceptPost else {
                    return Self.json(.methodNotAllowed, #"{"error":"unsupported"}"#)
                }
                state.counts.post += 1
                state.scopesRequested.append(scopes)
                var subject: String?
                switch form["grant_type"] {
                case "password":
                    if let name = form["username"], let account = users[name], account.password == form["password"] {
                        subject = name
                    }
                case "refresh_token":
                    state.counts.refreshGrants += 1
                    subject = form["refresh_token"].flatMap { state.refreshTokens[$0] }
                default:
                    break
                }
                guard let subject, let account = users[subject] else {
                    state.counts.rejected += 1
                    return Self.json(.unauthorized, #"{"error":"invalid_grant"}"#)
                }
                let refresh = UUID().uuidString
                state.refreshTokens[refresh] = subject
                let token = signer.sign(
                    subject: subject, access: Self.grant(scopes, policy: account.policy), lifetime: state.signedLifetime)
                SecretEvidence.record(token)
                SecretEvidence.record(refresh)
                return Self.json(
                    .ok,
                    #"{"access_token":"\#(token)","expires_in":\#(state.expiresIn),"refresh_token":"\#(refresh)","scope":"\#(scopes.joined(separator: " "))"}"#
                )
            }
        }
        let (portStream, portContinuation) = AsyncStream.makeStream(of: Int.self)
        let application = Application(
            router: router,
            configuration: .init(address: .hostname("127.0.0.1", port: 0), serverName: nil),
            onServerRunning: { channel in
                portContinuation.yield(channel.localAddress?.port ?? 0)
                portContinuation.finish()
            },
            logger: Logger(label: "test-token-issuer", factory: { _ in SwiftLogNoOpLogHandler() })
        )
        // The issuer serves from threads of its own: tests block cooperative threads while they
        // wait for child processes (skopeo, the CLI), which may be waiting for this issuer.
        self.serverTask = Task {
            try await withTaskExecutorPreference(DedicatedExecutor.shared) { try await application.run() }
        }
        var port = 0
        for await value in portStream { port = value }
        self.port = port
        self.state = state
        self.certificateFile = certificateFile
    }

    /// What has been served so far.
    public var counts: Counts { state.withLock { $0.counts } }
    /// The scopes of each request served, in order.
    public var scopesRequested: [[String]] { state.withLock { $0.scopesRequested } }

    /// Fails from now on, as `outage` says; `nil` serves again.
    public func setOutage(_ outage: Outage?) { state.withLock { $0.outage = outage } }

    /// Changes the lifetime of tokens issued from now on.
    public func setExpiresIn(_ seconds: Int) { state.withLock { $0.expiresIn = seconds } }

    /// How long past its `exp` the registry still accepts a token (distribution's `Leeway`).
    public static let registryLeeway = 60

    /// Makes tokens issued from now on die at the registry when `expires_in` says, not
    /// ``registryLeeway`` later: their `exp` is dated back by the leeway.
    public func setExpiresExactly(_ exactly: Bool) {
        state.withLock { $0.expiryShift = exactly ? Self.registryLeeway : 0 }
    }

    /// Stops serving.
    public func stop() { serverTask.cancel() }

    // MARK: - Helpers

    private static func basicUser(_ header: String?, users: [String: User]) -> (String, User)? {
        guard let header, header.lowercased().hasPrefix("basic "),
            let data = Data(base64Encoded: String(header.dropFirst(6))),
            let pair = String(data: data, encoding: .utf8), let colon = pair.firstIndex(of: ":")
        else { return nil }
        let name = String(pair[..<colon])
        guard let user = users[name], user.password == pair[pair.index(after: colon)...] else { return nil }
        return (name, user)
    }

    /// Grants the requested actions the policy allows, as the `access` claim.
    static func grant(_ scopes: [String], policy: Policy) -> [[String: Any]] {
        scopes.compactMap { scope -> [String: Any]? in
            let parts = scope.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count >= 3 else { return nil }
            let type = String(parts[0])
            let name = parts[1..<(parts.count - 1)].joined(separator: ":")
            let requested = parts[parts.count - 1].split(separator: ",").map(String.init)
            let allowed = (policy[name] ?? []).union(policy["*"] ?? [])
            let granted = requested.filter { allowed.contains($0) || (allowed.contains("*")) }
            return ["type": type, "name": name, "actions": granted]
        }
    }

    private static func json(_ status: HTTPResponse.Status, _ text: String) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    private static func now() -> String {
        ISO8601DateFormatter().string(from: Date())
    }

    private static func parseForm(_ text: String) -> [String: String] {
        var form: [String: String] = [:]
        for pair in text.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let decode = { (part: Substring) in
                String(part).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String(part)
            }
            form[decode(parts[0])] = parts.count > 1 ? decode(parts[1]) : ""
        }
        return form
    }
}

/// Signs RS256 JWTs with the certificate in an `x5c` header.
struct JWTSigner: Sendable {
    let key: _RSA.Signing.PrivateKey
    let certificate: String
    let issuer: String
    let audience: String

    func sign(subject: String, access: [[String: Any]], lifetime: Int) -> String {
        let now = Int(Date().timeIntervalSince1970)
        let header: [String: Any] = ["alg": "RS256", "typ": "JWT", "x5c": [certificate]]
        let claims: [String: Any] = [
            "iss": issuer, "sub": subject, "aud": audience, "exp": now + lifetime, "nbf": now - 1, "iat": now,
            "jti": UUID().uuidString, "access": access,
        ]
        let signingInput =
            Self.base64URL(try! JSONSerialization.data(withJSONObject: header, options: .sortedKeys))
            + "." + Self.base64URL(try! JSONSerialization.data(withJSONObject: claims, options: .sortedKeys))
        let signature = try! key.signature(for: Data(signingInput.utf8), padding: .insecurePKCS1v1_5)
        return signingInput + "." + Self.base64URL(signature.withUnsafeBytes { Data($0) })
    }

    static func base64URL(_ data: Data) -> String {
        data.base64EncodedString()
            .replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}

/// A value behind a lock, shareable by reference with escaping closures.
final class Locked<Value>: @unchecked Sendable {
    private var value: Value
    private let lock = NSLock()

    init(_ value: Value) { self.value = value }

    func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}

/// Runs jobs on a concurrent dispatch queue of its own, outside Swift's cooperative pool.
final class DedicatedExecutor: TaskExecutor {
    static let shared = DedicatedExecutor()
    private let queue = DispatchQueue(label: "test-support.dedicated", attributes: .concurrent)

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queue.async { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
