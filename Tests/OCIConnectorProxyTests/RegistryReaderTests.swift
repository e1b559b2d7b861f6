import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import OCITestSupport
import Testing

@testable import OCIConnectorProxy

/// ``RegistryReader`` against a real registry: whole bodies, bounded reads, connection reuse, and
/// failures that must surface as errors rather than as short bodies.
@Suite("Registry reader")
struct RegistryReaderTests {
    /// A registry holding one image whose layer is `layerSize` bytes.
    static func seeded(layerSize: Int, tls: Bool = false) async throws -> (TestRegistry, TestImage, String) {
        let registry = tls ? try await TestRegistry.start(.anonymous, tls: true) : try await SharedRegistries.shared.anonymous()
        let image = TestImage(layerSize: layerSize, seed: UInt8.random(in: 1...250))
        let repository = "fetcher/app\(UInt32.random(in: 0...UInt32.max))"
        try Seeder.push(image, to: registry, repository: repository, tag: "v1")
        return (registry, image, "/v2/\(repository)/blobs/\(sha256Digest(image.layer))")
    }

    static func fetcher(_ registry: TestRegistry, _ configuration: RegistryReader.Configuration = .init()) throws
        -> RegistryReader
    {
        try RegistryReader(host: "127.0.0.1", port: registry.port, hostHeader: registry.host, configuration: configuration)
    }

    /// Reads a body to its end: the bytes, and the largest buffer seen.
    static func read(_ body: RegistryReadBody) async throws -> (Data, Int) {
        var data = Data()
        var largest = 0
        for try await buffer in body {
            largest = max(largest, buffer.readableBytes)
            data.append(contentsOf: buffer.readableBytesView)
        }
        return (data, largest)
    }

    @Test func streamsABlobWholeInBuffersNoLargerThanConfigured() async throws {
        let (registry, image, path) = try await Self.seeded(layerSize: 12 << 20)
        let fetcher = try Self.fetcher(registry, .init(maximumReadSize: 512 * 1024))
        defer { Task { await fetcher.shutdown() } }

        let response = try await fetcher.get(path, headers: [:])
        #expect(response.head.status == .ok)
        #expect(response.head.headers.first(name: "Content-Length") == String(image.layer.count))
        let (data, largest) = try await Self.read(response.body)
        #expect(data.count == image.layer.count)
        #expect(sha256Digest(data) == sha256Digest(image.layer))
        #expect(largest <= 512 * 1024)
        #expect(fetcher.idleConnections == 1)
    }

    @Test func reusesOneConnectionForRequestsInTurn() async throws {
        let (registry, image, path) = try await Self.seeded(layerSize: 300_000)
        let fetcher = try Self.fetcher(registry)
        defer { Task { await fetcher.shutdown() } }

        for _ in 0..<3 {
            let (data, _) = try await Self.read(try await fetcher.get(path, headers: [:]).body)
            #expect(data == image.layer)
        }
        // An error response is a response too: its connection is reused as well.
        let missing = try await fetcher.get(path.replacingOccurrences(of: "sha256:", with: "sha256:0"), headers: [:])
        #expect(missing.head.status.code >= 400)
        let (error, _) = try await Self.read(missing.body)
        #expect(String(decoding: error, as: UTF8.self).contains(#""errors""#))
        #expect(fetcher.connectionsOpened == 1)
        #expect(fetcher.idleConnections == 1)
    }

    @Test func headHasNoBodyAndLeavesTheConnectionReusable() async throws {
        let (registry, image, path) = try await Self.seeded(layerSize: 200_000)
        let fetcher = try Self.fetcher(registry)
        defer { Task { await fetcher.shutdown() } }

        let head = try await fetcher.read(.HEAD, path, headers: [:])
        #expect(head.head.status == .ok)
        #expect(head.head.headers.first(name: "Content-Length") == String(image.layer.count))
        let (empty, _) = try await Self.read(head.body)
        #expect(empty.isEmpty)
        let (data, _) = try await Self.read(try await fetcher.get(path, headers: [:]).body)
        #expect(data == image.layer)
        #expect(fetcher.connectionsOpened == 1)
    }

    @Test func rangeRequestsPassThrough() async throws {
        let (registry, image, path) = try await Self.seeded(layerSize: 100_000)
        let fetcher = try Self.fetcher(registry)
        defer { Task { await fetcher.shutdown() } }

        let response = try await fetcher.get(path, headers: ["Range": "bytes=1000-1999"])
        #expect(response.head.status == .partialContent)
        let (data, _) = try await Self.read(response.body)
        #expect(data == image.layer[1000..<2000])
    }

    @Test func idleConnectionsCloseAfterTheIdleTimeout() async throws {
        let (registry, image, path) = try await Self.seeded(layerSize: 100_000)
        let fetcher = try Self.fetcher(registry, .init(idleTimeout: .milliseconds(200)))
        defer { Task { await fetcher.shutdown() } }

        // (Reuse while fresh is what the other tests see, with the default 30 s.)
        _ = try await Self.read(try await fetcher.get(path, headers: [:]).body)
        #expect(fetcher.connectionsOpened == 1)
        // Closed and forgotten once it has sat idle for the timeout.
        try await waitUntil { fetcher.idleConnections == 0 && fetcher.pooledConnections == 0 }
        let (data, _) = try await Self.read(try await fetcher.get(path, headers: [:]).body)
        #expect(data == image.layer)
        #expect(fetcher.connectionsOpened == 2)
    }

    /// A connection whose receive buffer a blob read grew keeps it while idle, so only a few such
    /// connections stay idle; those that carried small bodies are not counted.
    ///
    /// How large a read gets depends on how far the registry is ahead of the reader (reads of a
    /// 16 MiB blob on loopback reach 1 MiB), so what is expected follows the reads observed.
    @Test func fewIdleConnectionsKeepLargeReceiveBuffers() async throws {
        let (registry, image, path) = try await Self.seeded(layerSize: 16 << 20)
        let fetcher = try Self.fetcher(registry, .init(idleConnections: 8, idleConnectionsWithLargeBuffers: 2))
        defer { Task { await fetcher.shutdown() } }
        let config = path.replacingOccurrences(of: sha256Digest(image.layer), with: sha256Digest(image.config))
        let layerDigest = sha256Digest(image.layer)
        let large = { (read: Int) in read >= ConnectionPool.largeRead }

        // A small body: its connection is kept. A large one on the same connection: now it
        // holds a large buffer, and counts against the two.
        _ = try await Self.read(try await fetcher.get(config, headers: [:]).body)
        #expect(fetcher.idleConnections == 1)
        #expect(fetcher.idleConnectionsWithLargeBuffers == 0)
        let (first, firstLargest) = try await Self.read(try await fetcher.get(path, headers: [:]).body)
        #expect(sha256Digest(first) == layerDigest)
        #expect(fetcher.idleConnectionsWithLargeBuffers == (large(firstLargest) ? 1 : 0))

        // Six at once (each body is unread while the next request starts, so each needs its own
        // connection; more than four reads ahead are never buffered, so none can end early).
        var responses: [RegistryReadResponse] = []
        for _ in 0..<6 { responses.append(try await fetcher.get(path, headers: [:])) }
        var largeOnes = 0
        for response in responses {
            let (data, largest) = try await Self.read(response.body)
            #expect(sha256Digest(data) == layerDigest)
            if large(largest) { largeOnes += 1 }
        }
        print("reads of 256 KiB or more on \(largeOnes) of 6 connections (largest first read \(firstLargest) bytes)")
        #expect(fetcher.connectionsOpened == 6)
        #expect(fetcher.idleConnectionsWithLargeBuffers == min(2, largeOnes))
        #expect(fetcher.idleConnections == min(2, largeOnes) + (6 - largeOnes))

        // With no room for large buffers, a connection is kept until it carries a large body.
        let strict = try Self.fetcher(registry, .init(idleConnections: 8, idleConnectionsWithLargeBuffers: 0))
        defer { Task { await strict.shutdown() } }
        _ = try await Self.read(try await strict.get(config, headers: [:]).body)
        _ = try await Self.read(try await strict.get(config, headers: [:]).body)
        #expect(strict.idleConnections == 1)
        let (_, largest) = try await Self.read(try await strict.get(path, headers: [:]).body)
        #expect(strict.idleConnections == (large(largest) ? 0 : 1))
        _ = try await Self.read(try await strict.get(config, headers: [:]).body)
        #expect(strict.idleConnections == 1)
        #expect(strict.connectionsOpened == (large(largest) ? 2 : 1))
    }

    @Test func droppingABodyClosesItsConnection() async throws {
        let (registry, image, path) = try await Self.seeded(layerSize: 16 << 20)
        let fetcher = try Self.fetcher(registry, .init(maximumReadSize: 64 * 1024, bufferedReads: 2))
        defer { Task { await fetcher.shutdown() } }

        do {
            var iterator = try await fetcher.get(path, headers: [:]).body.makeAsyncIterator()
            let first = try await iterator.next()
            #expect(first != nil)
        }
        // The rest of the body cannot be skipped cheaply: the connection is closed, not kept.
        try await waitUntil { fetcher.idleConnections == 0 && fetcher.connectionsOpened == 1 }
        let (data, _) = try await Self.read(try await fetcher.get(path, headers: [:]).body)
        #expect(data == image.layer)
        #expect(fetcher.connectionsOpened == 2)
    }

    @Test func tlsWithTheConnectorsAuthority() async throws {
        let (registry, image, path) = try await Self.seeded(layerSize: 1 << 20, tls: true)
        defer { registry.stop() }
        let pem = try #require(registry.certificatePEM)
        var trusted = TLSConfiguration.makeClientConfiguration()
        trusted.additionalTrustRoots = [.certificates(try NIOSSLCertificate.fromPEMBytes(Array(pem.utf8)))]
        let fetcher = try Self.fetcher(registry, .init(tls: trusted))
        defer { Task { await fetcher.shutdown() } }
        let (data, _) = try await Self.read(try await fetcher.get(path, headers: [:]).body)
        #expect(data == image.layer)

        // Without the authority the handshake fails, before any response.
        let untrusting = try Self.fetcher(registry, .init(tls: .makeClientConfiguration()))
        defer { Task { await untrusting.shutdown() } }
        await #expect { try await untrusting.get(path, headers: [:]) } throws: { error in
            (error as? RegistryReadError)?.kind == .closedBeforeResponse
        }
    }

    @Test func aSilentUpstreamTimesOut() async throws {
        // Accepts connections and never answers.
        let silent = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0).get()
        defer { silent.close(promise: nil) }
        let port = try #require(silent.localAddress?.port)
        let fetcher = try RegistryReader(
            host: "127.0.0.1", port: port, hostHeader: "127.0.0.1:\(port)",
            configuration: .init(readTimeout: .milliseconds(300)))
        defer { Task { await fetcher.shutdown() } }
        await #expect { try await fetcher.get("/v2/a/blobs/sha256:00", headers: [:]) } throws: { error in
            (error as? RegistryReadError)?.kind == .timedOut
        }
    }

    @Test func nothingListeningIsUnreachable() async throws {
        let closed = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0).get()
        let port = try #require(closed.localAddress?.port)
        try await closed.close()
        let fetcher = try RegistryReader(host: "127.0.0.1", port: port, hostHeader: "127.0.0.1:\(port)")
        await #expect { try await fetcher.get("/v2/a/blobs/sha256:00", headers: [:]) } throws: { error in
            (error as? RegistryReadError)?.kind == .unreachable && "\(error)".contains("127.0.0.1:\(port)")
        }
    }
}

extension RegistryReaderTests {
    @Test func aRequestOnAConnectionTheUpstreamDroppedIsSentAgain() async throws {
        let upstream = try await ScriptedUpstream.start(.closeOnSecondRequest)
        defer { upstream.close() }
        let fetcher = try RegistryReader(host: "127.0.0.1", port: upstream.port, hostHeader: "127.0.0.1:\(upstream.port)")
        defer { Task { await fetcher.shutdown() } }
        for _ in 0..<2 {
            let response = try await fetcher.get("/v2/a/blobs/sha256:00", headers: [:])
            let (data, _) = try await Self.read(response.body)
            #expect(String(decoding: data, as: UTF8.self) == "ok")
        }
        #expect(fetcher.connectionsOpened == 2)
    }

    @Test func aShortBodyIsAnErrorNotAnEnd() async throws {
        let upstream = try await ScriptedUpstream.start(.truncate)
        defer { upstream.close() }
        let fetcher = try RegistryReader(host: "127.0.0.1", port: upstream.port, hostHeader: "127.0.0.1:\(upstream.port)")
        defer { Task { await fetcher.shutdown() } }
        let response = try await fetcher.get("/v2/a/blobs/sha256:00", headers: [:])
        #expect(response.head.status == .ok)
        await #expect { _ = try await Self.read(response.body) } throws: { error in
            (error as? RegistryReadError)?.kind == .truncated
        }
    }
}

/// An HTTP/1.1 upstream that misbehaves on purpose.
struct ScriptedUpstream {
    enum Script: Sendable {
        /// Answers a connection's first request with `ok`, and closes it on the second.
        case closeOnSecondRequest
        /// Promises 100 bytes, sends 10 and closes.
        case truncate
        /// Answers with ``ScriptedUpstream/splitBody``: the head and the first bytes of the body
        /// in one write, the rest a little later.
        case splitBody
    }

    static let splitBody = #"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}"#

    let channel: any Channel
    var port: Int { channel.localAddress?.port ?? 0 }

    static func start(_ script: Script) async throws -> ScriptedUpstream {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Handler(script: script))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return ScriptedUpstream(channel: channel)
    }

    func close() {
        channel.close(promise: nil)
    }

    final class Handler: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let script: Script
        var served = 0

        init(script: Script) {
            self.script = script
        }

        var isHead = false

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let part = unwrapInboundIn(data)
            if case .head(let head) = part { isHead = head.method == .HEAD }
            guard case .end = part else { return }
            served += 1
            switch script {
            case .closeOnSecondRequest where served > 1:
                context.close(promise: nil)
            case .closeOnSecondRequest:
                respond(context, length: 2, body: "ok", end: true)
            case .truncate:
                respond(context, length: 100, body: "0123456789", end: false)
                context.close(promise: nil)
            case .splitBody:
                let body = ScriptedUpstream.splitBody
                respond(context, length: body.utf8.count, body: String(body.prefix(10)), end: false)
                let rest = String(body.dropFirst(10))
                let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                context.eventLoop.scheduleTask(in: .milliseconds(50)) {
                    let (handler, context) = loopBound.value
                    context.write(handler.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: rest)))), promise: nil)
                    context.writeAndFlush(handler.wrapOutboundOut(.end(nil)), promise: nil)
                }
            }
        }

        func respond(_ context: ChannelHandlerContext, length: Int, body: String, end: Bool) {
            let head = HTTPResponseHead(version: .http1_1, status: .ok, headers: ["Content-Length": String(length)])
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            if !isHead { context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil) }
            if end { context.write(wrapOutboundOut(.end(nil)), promise: nil) }
            context.flush()
        }
    }
}

/// Polls `condition` for up to five seconds.
func waitUntil(_ condition: () -> Bool) async throws {
    for _ in 0..<500 where !condition() {
        try await Task.sleep(for: .milliseconds(10))
    }
    #expect(condition())
}
