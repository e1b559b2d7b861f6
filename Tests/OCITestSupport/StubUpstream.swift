import Foundation
import Hummingbird
import Logging

/// A small upstream for the behaviours a local registry does not show: blob reads redirected to
/// another origin (as registries do to object storage), slow answers and answers that do not
/// come, and bodies that fail half-way or never end, on blob and manifest routes and on the
/// storage blobs are redirected to alike, redirects to a Unix socket on this machine, and uploads held until many run at once.
///
/// It asks for Basic credentials, so the proxy sends them; `/storage/…` records what arrives.
public final class StubUpstream: Sendable {
    public let port: Int
    /// The blob every route serves.
    public let blob: Data
    private let seen: Locked<[String?]>
    private let stream: Locked<(written: Int, ended: Bool)>
    private let socketPath: String
    private let socketRequests: Locked<Int>
    private let uploads: Locked<(inFlight: Int, most: Int)>
    private let task: Task<Void, any Error>

    /// `http://127.0.0.1:PORT`: the connector's address.
    public var url: String { "http://127.0.0.1:\(port)" }
    /// The `Authorization` headers the storage route received, in order (`nil`: none).
    public var storageAuthorizations: [String?] { seen.withLock { $0.filter { !($0?.hasPrefix("redirect ") ?? false) } } }
    /// How many requests the redirecting blob route answered.
    public var redirectsAnswered: Int { seen.withLock { $0.filter { $0?.hasPrefix("redirect ") ?? false }.count } }
    /// What the endless route has written so far, and whether its writing has ended (the
    /// connection it wrote to went away).
    public var endlessStream: (written: Int, ended: Bool) { stream.withLock { $0 } }
    /// How many uploads `v2/hold/app/blobs/uploads/…` waits to see in flight at once.
    public static let heldUploads = 12
    /// The most uploads `v2/hold/…` had in flight at once.
    public var mostUploadsInFlight: Int { uploads.withLock { $0.most } }
    /// How many requests reached the Unix socket that `v2/http-unix/…` and `v2/unix/…` redirect to.
    public var unixSocketRequests: Int { socketRequests.withLock { $0 } }

    public static func start() async throws -> StubUpstream {
        let blob = Data((0..<(256 * 1024)).map { UInt8(truncatingIfNeeded: $0 &* 7) })
        let seen = Locked<[String?]>([])
        let stream = Locked<(written: Int, ended: Bool)>((0, false))
        let router = Router()
        router.get("v2") { request, _ -> Response in
            request.headers[.authorization] == nil
                ? Response(status: .unauthorized, headers: [.wwwAuthenticate: #"Basic realm="stub""#])
                : Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: "{}")))
        }
        // A redirect to `/storage/NAME` on another origin: "localhost" is not the connector's "127.0.0.1".
        let redirectToStorage = { @Sendable (name: String) in
            { @Sendable (request: Request, _: BasicRequestContext) -> Response in
                seen.withLock { $0.append("redirect \(request.method)") }
                let port = request.head.authority?.split(separator: ":").last ?? ""
                return Response(
                    status: .temporaryRedirect, headers: [.location: "http://localhost:\(port)/storage/\(name)?sig=1"])
            }
        }
        let redirect = redirectToStorage("blob")
        router.get("v2/redirect/app/blobs/:digest", use: redirect)
        router.head("v2/redirect/app/blobs/:digest", use: redirect)
        // A redirect to the same origin, after a pause: the proxy's responder follows it with
        // the connector's credentials.
        let slowRedirect = { @Sendable (request: Request, _: BasicRequestContext) async throws -> Response in
            try await Task.sleep(for: .milliseconds(300))
            seen.withLock { $0.append("redirect \(request.method)") }
            return Response(status: .temporaryRedirect, headers: [.location: "/storage/blob?sig=1"])
        }
        router.get("v2/slow-redirect/app/blobs/:digest", use: slowRedirect)
        router.head("v2/slow-redirect/app/blobs/:digest", use: slowRedirect)
        let blobHead: HTTPFields = [.contentType: "application/octet-stream", .contentLength: "\(blob.count)"]
        router.head("storage/blob") { request, _ -> Response in
            seen.withLock { $0.append(request.headers[.authorization]) }
            return Response(status: .ok, headers: blobHead)
        }
        router.get("storage/blob") { request, _ -> Response in
            seen.withLock { $0.append(request.headers[.authorization]) }
            return Response(
                status: .ok, headers: [.contentType: "application/octet-stream"],
                body: .init(byteBuffer: ByteBuffer(bytes: blob)))
        }
        // A plain blob, and the same answered after a pause (what follows it on a connection
        // must wait). Manifest routes serve the blob as a manifest, so that the proxy's handling of
        // manifests meets a body that takes several reads.
        let manifestHead: HTTPFields = [
            .contentType: "application/vnd.oci.image.manifest.v1+json", .contentLength: "\(blob.count)",
        ]
        let plain = { @Sendable (request: Request, _: BasicRequestContext) -> Response in
            let manifest = request.uri.path.contains("/manifests/")
            let head = manifest ? manifestHead : blobHead
            return request.method == .head
                ? Response(status: .ok, headers: head)
                : Response(
                    status: .ok, headers: [.contentType: head[.contentType]!], body: .init(byteBuffer: ByteBuffer(bytes: blob)))
        }
        let slow = { @Sendable (request: Request, context: BasicRequestContext) async throws -> Response in
            try await Task.sleep(for: .milliseconds(300))
            return plain(request, context)
        }
        // Answers only after 30 s: long after any client that is going to leave has left.
        let silent = { @Sendable (request: Request, context: BasicRequestContext) async throws -> Response in
            try await Task.sleep(for: .seconds(30))
            return plain(request, context)
        }
        // Promises the whole blob, sends a quarter, then fails.
        let broken = { @Sendable (_: Request, _: BasicRequestContext) -> Response in
            Response(
                status: .ok,
                body: ResponseBody(contentLength: blob.count) { writer in
                    try await writer.write(ByteBuffer(bytes: blob.prefix(blob.count / 4)))
                    throw TestSupportError("the stub upstream fails mid-body on purpose")
                })
        }
        // 4 GiB (`endless`) or 1 GiB (`big`) in 1 MiB buffers, as fast as the reader takes them.
        let sized = { @Sendable (mebibytes: Int) in
            { @Sendable (_: Request, _: BasicRequestContext) -> Response in
                let chunk = ByteBuffer(repeating: 0x5a, count: 1 << 20)
                return Response(
                    status: .ok,
                    body: ResponseBody(contentLength: mebibytes << 20) { writer in
                        defer { stream.withLock { $0.ended = true } }
                        for _ in 0..<mebibytes {
                            try await writer.write(chunk)
                            stream.withLock { $0.written += chunk.readableBytes }
                        }
                        try await writer.finish(nil)
                    })
            }
        }
        let endless = sized(4096)
        let big = sized(1024)
        // The same behaviours on the storage a blob read is redirected to: `v2/storage-KIND/app`
        // redirects to `/storage/KIND` on another origin.
        // Storage that refuses its own signed URL, and storage that redirects to itself forever.
        let refusing = { @Sendable (_: Request, _: BasicRequestContext) -> Response in
            Response(
                status: .unauthorized, headers: [.wwwAuthenticate: #"Basic realm="storage""#],
                body: .init(byteBuffer: ByteBuffer(string: "storage-says-no")))
        }
        let storageLoop = { @Sendable (_: Request, _: BasicRequestContext) -> Response in
            Response(status: .temporaryRedirect, headers: [.location: "/storage/loop?sig=1"])
        }
        let kinds: [(String, @Sendable (Request, BasicRequestContext) async throws -> Response)] = [
            ("plain", plain), ("slow", slow), ("broken", broken), ("endless", endless), ("refusing", refusing),
            ("loop", storageLoop),
        ]
        for (kind, handler) in kinds {
            let recorded = { @Sendable (request: Request, context: BasicRequestContext) async throws -> Response in
                seen.withLock { $0.append(request.headers[.authorization]) }
                return try await handler(request, context)
            }
            router.head("storage/\(kind)", use: recorded)
            router.get("storage/\(kind)", use: recorded)
            let toStorage = redirectToStorage(kind)
            router.head("v2/storage-\(kind)/app/blobs/:digest", use: toStorage)
            router.get("v2/storage-\(kind)/app/blobs/:digest", use: toStorage)
        }
        // Uploads that are answered only once `heldUploads` of them are in flight at the same
        // time (or after 5 s): how many the proxy lets run at once.
        let uploads = Locked<(inFlight: Int, most: Int)>((0, 0))
        router.put("v2/hold/app/blobs/uploads/:id") { request, _ -> Response in
            _ = try await request.body.collect(upTo: 1 << 20)
            uploads.withLock { state in
                state.inFlight += 1
                state.most = max(state.most, state.inFlight)
            }
            defer { uploads.withLock { $0.inFlight -= 1 } }
            var waited = 0
            while uploads.withLock({ $0.most }) < StubUpstream.heldUploads, waited < 5000 {
                try await Task.sleep(for: .milliseconds(20))
                waited += 20
            }
            let digest = request.uri.queryParameters["digest"].map(String.init) ?? ""
            return Response(status: .created, headers: [.location: "/v2/hold/app/blobs/\(digest)"])
        }
        // Redirects to a Unix socket on this machine, in both URL forms an HTTP client may speak.
        // In /tmp: a socket's path must fit in 108 bytes, which a long $TMPDIR may not leave.
        let socketPath = "/tmp/stub-\(UUID().uuidString.prefix(8)).sock"
        let encodedSocket = socketPath.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? socketPath
        for (name, location) in [("http-unix", "http+unix://\(encodedSocket)/storage/blob"), ("unix", "unix://\(socketPath)")] {
            let toSocket = { @Sendable (_: Request, _: BasicRequestContext) -> Response in
                Response(status: .temporaryRedirect, headers: [.location: location])
            }
            router.head("v2/\(name)/app/blobs/:digest", use: toSocket)
            router.get("v2/\(name)/app/blobs/:digest", use: toSocket)
        }
        // Answers that carry what only the proxy may see: the request's own `Authorization` (the
        // connector's credentials), echoed, and headers a careless upstream might send.
        let echo = { @Sendable (request: Request, context: BasicRequestContext) -> Response in
            var response = plain(request, context)
            response.headers[.authorization] = request.headers[.authorization] ?? "none"
            response.headers[.proxyAuthorization] = "Basic cHJveHk6c2VjcmV0"
            response.headers[.setCookie] = "session=upstream-session-cookie; Path=/"
            return response
        }
        router.get("v2/echo/app/tags/list", use: echo)
        // Redirects back to itself on the upstream's own origin, forever.
        let loop = { @Sendable (request: Request, _: BasicRequestContext) -> Response in
            Response(status: .temporaryRedirect, headers: [.location: request.uri.path])
        }
        for path in ["blobs/:digest", "manifests/:reference"] {
            router.head("v2/echo/app/\(path)", use: echo)
            router.get("v2/echo/app/\(path)", use: echo)
            router.head("v2/loop/app/\(path)", use: loop)
            router.get("v2/loop/app/\(path)", use: loop)
            router.head("v2/plain/app/\(path)", use: plain)
            router.get("v2/plain/app/\(path)", use: plain)
            router.head("v2/slow/app/\(path)", use: slow)
            router.get("v2/slow/app/\(path)", use: slow)
            router.head("v2/silent/app/\(path)", use: silent)
            router.get("v2/silent/app/\(path)", use: silent)
            router.get("v2/broken/app/\(path)", use: broken)
            router.get("v2/endless/app/\(path)", use: endless)
            router.get("v2/big/app/\(path)", use: big)
        }
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        let application = Application(
            router: router,
            configuration: .init(address: .hostname("127.0.0.1", port: 0), serverName: nil),
            onServerRunning: { channel in
                continuation.yield(channel.localAddress?.port ?? 0)
                continuation.finish()
            },
            logger: Logger(label: "stub-upstream", factory: { _ in SwiftLogNoOpLogHandler() }))
        // What listens on the Unix socket: it answers every request with the blob, and counts them.
        let socketRequests = Locked(0)
        let socketRouter = Router()
        let counted = { @Sendable (request: Request, context: BasicRequestContext) async throws -> Response in
            socketRequests.withLock { $0 += 1 }
            return plain(request, context)
        }
        for path in ["/", "storage/blob"] {
            socketRouter.head(RouterPath(path), use: counted)
            socketRouter.get(RouterPath(path), use: counted)
        }
        let (socketReady, socketContinuation) = AsyncStream.makeStream(of: Void.self)
        let socketApplication = Application(
            router: socketRouter,
            configuration: .init(address: .unixDomainSocket(path: socketPath), serverName: nil),
            onServerRunning: { _ in socketContinuation.finish() },
            logger: Logger(label: "stub-socket", factory: { _ in SwiftLogNoOpLogHandler() }))
        let task = Task {
            // If a server cannot start, `start()` must not wait for it forever.
            defer {
                continuation.finish()
                socketContinuation.finish()
            }
            try await withTaskExecutorPreference(DedicatedExecutor.shared) {
                try await withThrowingTaskGroup { group in
                    group.addTask { try await application.run() }
                    group.addTask { try await socketApplication.run() }
                    try await group.waitForAll()
                }
            }
        }
        var port = 0
        for await value in ports { port = value }
        for await _ in socketReady {}
        guard port != 0 else { throw TestSupportError("the stub upstream did not start") }
        return StubUpstream(
            port: port, blob: blob, seen: seen, stream: stream, socketPath: socketPath, socketRequests: socketRequests,
            uploads: uploads, task: task)
    }

    private init(
        port: Int, blob: Data, seen: Locked<[String?]>, stream: Locked<(written: Int, ended: Bool)>,
        socketPath: String, socketRequests: Locked<Int>, uploads: Locked<(inFlight: Int, most: Int)>, task: Task<Void, any Error>
    ) {
        self.stream = stream
        self.port = port
        self.blob = blob
        self.seen = seen
        self.socketPath = socketPath
        self.socketRequests = socketRequests
        self.uploads = uploads
        self.task = task
    }

    public func stop() {
        task.cancel()
        try? FileManager.default.removeItem(atPath: socketPath)
    }
}
