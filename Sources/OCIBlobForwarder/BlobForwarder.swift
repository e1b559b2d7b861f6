public import AsyncHTTPClient
public import HummingbirdCore
public import NIOCore
import Synchronization

/// Streams bodies between the workload and the upstream registry.
///
/// Buffers are handed through as the `ByteBuffer`s they arrive in: nothing is copied into arrays
/// or `Data`, nothing is collected. Both directions pull: the upstream response is read only as
/// fast as the client takes it, and the client's upload only as fast as the upstream accepts it,
/// so memory per stream stays bounded whatever the size of the blob.
public enum BlobForwarder {
    /// A request body for the upstream that streams `body` (the client's upload).
    public static func upstreamBody<Body: AsyncSequence & Sendable>(
        from body: Body, length: Int?, counter: ByteCounter
    ) -> HTTPClientRequest.Body where Body.Element == ByteBuffer {
        .stream(CountingSequence(base: body, counter: counter), length: length.map { .known(Int64($0)) } ?? .unknown)
    }

    /// A response body for the client that streams the upstream's response body.
    ///
    /// If the upstream fails mid-body the error propagates, so the client's connection ends
    /// abnormally instead of with a clean but truncated body. If the client goes away, writing
    /// throws, iteration stops, and the upstream request is cancelled with it.
    public static func clientBody<Upstream: AsyncSequence & Sendable>(
        from upstream: Upstream, length: Int?, counter: ByteCounter,
        finished: @escaping @Sendable ((any Error)?) -> Void
    ) -> ResponseBody where Upstream.Element == ByteBuffer {
        ResponseBody(contentLength: length) { writer in
            do {
                for try await buffer in upstream {
                    counter.add(buffer.readableBytes)
                    try await writer.write(buffer)
                }
                try await writer.finish(nil)
                finished(nil)
            } catch {
                finished(error)
                throw error
            }
        }
    }
}

/// Counts bytes as they pass, for the request log.
public final class ByteCounter: Sendable {
    private let total = Atomic<Int>(0)

    /// A counter at zero.
    public init() {}

    /// Adds `count` bytes.
    public func add(_ count: Int) {
        total.wrappingAdd(count, ordering: .relaxed)
    }

    /// The bytes counted so far.
    public var value: Int { total.load(ordering: .relaxed) }
}

/// Passes an async sequence of buffers through unchanged, counting their bytes.
struct CountingSequence<Base: AsyncSequence & Sendable>: AsyncSequence, Sendable where Base.Element == ByteBuffer {
    typealias Element = ByteBuffer
    let base: Base
    let counter: ByteCounter

    struct AsyncIterator: AsyncIteratorProtocol {
        var base: Base.AsyncIterator
        let counter: ByteCounter

        mutating func next() async throws -> ByteBuffer? {
            guard let buffer = try await base.next() else { return nil }
            counter.add(buffer.readableBytes)
            return buffer
        }
    }

    func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: base.makeAsyncIterator(), counter: counter)
    }
}
