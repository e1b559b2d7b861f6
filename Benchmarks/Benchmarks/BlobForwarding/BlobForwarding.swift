import Benchmark
import NIOCore
import OCIBlobForwarder

// The forwarder of an upload to the upstream, with both ends in memory: what moving a blob costs
// the proxy itself, apart from sockets. One iteration forwards 64 MiB;
// allocations per forwarded MiB are the reported mallocCountTotal divided by 64.

private let mebibyte = 1 << 20
private let blobSize = 64 * mebibyte

/// An upload: the same buffer `count` times, as a connection's reads would arrive.
struct InMemoryBody: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let buffer: ByteBuffer
    let count: Int

    struct AsyncIterator: AsyncIteratorProtocol {
        let buffer: ByteBuffer
        var remaining: Int

        mutating func next() async -> ByteBuffer? {
            guard remaining > 0 else { return nil }
            remaining -= 1
            return buffer
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(buffer: buffer, remaining: count) }
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.throughput, .wallClock, .mallocCountTotal],
        maxDuration: .seconds(2),
        maxIterations: 200,
        // Thresholds/ holds the p90 of allocations per 64 MiB forwarded; two more fail
        // `bash Benchmarks/thresholds.sh check`.
        thresholds: [.mallocCountTotal: .init(absolute: [.p90: 2])]
    )

    for readSize in [64 * 1024, 256 * 1024, mebibyte] {
        let upstream = InMemoryBody(buffer: ByteBuffer(repeating: 0x5a, count: readSize), count: blobSize / readSize)
        Benchmark("Forward64MiB-\(readSize / 1024)KiBReads") { benchmark in
            for _ in benchmark.scaledIterations {
                let counter = ByteCounter()
                var written = 0
                for try await buffer in BlobForwarder.counted(upstream, counter: counter) {
                    written += buffer.readableBytes  // The upstream connection: takes every buffer, keeps none.
                }
                precondition(written == blobSize && counter.value == blobSize, "forwarded \(written) of \(blobSize) bytes")
                blackHole(counter.value)
            }
        }
    }
}
