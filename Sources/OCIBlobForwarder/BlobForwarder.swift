public import AsyncHTTPClient
public import NIOCore
import Synchronization

/// Streams bodies between the workload and the upstream registry.
///
/// Buffers are handed through as the `ByteBuffer`s they arrive in: nothing is copied into arrays
/// or `Data`, nothing is collected. The upstream pulls: the client's upload is read only as fast
/// as the upstream accepts it, so memory per stream stays bounded whatever the size of the blob.
public enum BlobForwarder {
    /// A request body for the upstream that streams `body` (the client's upload), counting it.
    public static func upstreamBody<Body: AsyncSequence & Sendable>(
        from body: Body, length: Int?, counter: ByteCounter
    ) -> HTTPClientRequest.Body where Body.Element == ByteBuffer {
        .stream(counted(body, counter: counter), length: length.map { .known(Int64($0)) } ?? .unknown)
    }

    /// `body` unchanged, its bytes added to `counter` as they pass.
    public static func counted<Body: AsyncSequence & Sendable>(_ body: Body, counter: ByteCounter) -> CountedBody<Body> {
        CountedBody(base: body, counter: counter)
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

/// An async sequence of buffers passed through unchanged, their bytes counted.
public struct CountedBody<Base: AsyncSequence & Sendable>: AsyncSequence, Sendable where Base.Element == ByteBuffer {
    public typealias Element = ByteBuffer
    let base: Base
    let counter: ByteCounter

    /// Iterates the buffers, counting each.
    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: Base.AsyncIterator
        let counter: ByteCounter

        /// The next buffer, `nil` at the end; throws what the base throws.
        public mutating func next() async throws -> ByteBuffer? {
            guard let buffer = try await base.next() else { return nil }
            counter.add(buffer.readableBytes)
            return buffer
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: base.makeAsyncIterator(), counter: counter)
    }
}
