import Foundation
import NIOCore
import NIOEmbedded
import Testing

@testable import OCIConnectorProxy

/// Requests whose framing is ambiguous, as request smuggling uses them, sent raw to the proxy's
/// pipeline: each is refused (400, connection closed) or read as exactly what it is, never as a
/// request hidden in another's body. The proxy re-frames everything it sends upstream, so what it
/// reads here is all an upstream could ever see.
@Suite("Request framing")
struct RequestFramingTests {
    /// How the proxy must take a request.
    enum Outcome: Sendable, CustomStringConvertible {
        /// 400 and the connection closed; at most the request's own head was answered before
        /// (NIO's decoder hands a head on before it finds its body's framing wrong), never the
        /// request hidden behind it.
        case refused
        /// Exactly these statuses, in order.
        case answered([String])
        var description: String {
            switch self {
            case .refused: "refused"
            case .answered(let statuses): "answered \(statuses)"
            }
        }
    }

    static let next = "GET /v2/ HTTP/1.1\r\nHost: p\r\n\r\n"
    /// A request hidden behind an ambiguous one: its answer would be the only 404.
    static let hidden = "GET /v3/hidden HTTP/1.1\r\nHost: p\r\n\r\n"

    /// (what, raw bytes, outcome). Unauthenticated `/v2/` is answered 401 by the proxy itself.
    static let cases: [(String, String, Outcome)] = [
        (
            "conflicting Content-Lengths",
            "POST /v2/ HTTP/1.1\r\nHost: p\r\nContent-Length: 5\r\nContent-Length: 40\r\n\r\nhello" + hidden, .refused
        ),
        (
            "Content-Length with Transfer-Encoding",
            "POST /v2/ HTTP/1.1\r\nHost: p\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + hidden, .refused
        ),
        (
            "obfuscated Transfer-Encoding", "POST /v2/ HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: xchunked\r\n\r\n" + hidden,
            .refused
        ),
        (
            "Transfer-Encoding with a space before the colon",
            "POST /v2/ HTTP/1.1\r\nHost: p\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + hidden, .refused
        ),
        (
            "chunked not last", "POST /v2/ HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + hidden,
            .refused
        ),
        ("obs-fold", "GET /v2/ HTTP/1.1\r\nHost: p\r\nX-A: one\r\n two\r\n\r\n" + hidden, .refused),
        ("NUL in a header", "GET /v2/ HTTP/1.1\r\nHost: p\r\nX-A: a\u{0}b\r\n\r\n" + hidden, .refused),
        ("a control byte in a header", "GET /v2/ HTTP/1.1\r\nHost: p\r\nX-A: a\u{1}b\r\n\r\n" + hidden, .refused),
        ("a negative Content-Length", "POST /v2/ HTTP/1.1\r\nHost: p\r\nContent-Length: -1\r\n\r\n" + hidden, .refused),
        // The body is read as a body (and dropped), not as the request it looks like.
        (
            "a GET with a body", "GET /v2/ HTTP/1.1\r\nHost: p\r\nContent-Length: 36\r\n\r\n" + hidden + next,
            .answered(["401", "401"])
        ),
        ("pipelined", next + next + next, .answered(["401", "401", "401"])),
        ("absolute-form target", "GET http://evil.example/v2/ HTTP/1.1\r\nHost: p\r\n\r\n" + next, .answered(["404", "401"])),
    ]

    @Test(arguments: cases) func eachIsRefusedOrReadAsItIs(what: String, bytes: String, outcome: Outcome) throws {
        let proxy = try ClientConnectionTests.proxy()
        defer { Task { await proxy.shutdown() } }
        let (channel, _) = try ClientConnectionTests.channel(proxy)
        _ = try? channel.writeInbound(ByteBuffer(string: bytes))
        for _ in 0..<4 { channel.embeddedEventLoop.run() }
        let written = try ClientConnectionTests.written(channel)
        let statuses = written.components(separatedBy: "HTTP/1.1 ").dropFirst().map { String($0.prefix(3)) }
        switch outcome {
        case .refused:
            #expect(statuses.last == "400" && !statuses.contains("404"), "\(what): \(statuses) \(written.prefix(300))")
            #expect(!channel.isActive, "\(what): the connection stayed open")
        case .answered(let expected):
            #expect(statuses == expected, "\(what): \(written.prefix(400))")
        }
    }
}
