import AsyncHTTPClient
import NIOCore
import Testing

@testable import OCIAuth

/// What a failure to talk to an upstream is called: a timeout is told apart from an upstream
/// that cannot be reached, so that the proxy answers `504` rather than `502`.
@Suite("Upstream failures")
struct UpstreamFailureTests {
    static let cases: [(String, any Error & Sendable, AuthError.Code)] = [
        ("connect timeout", HTTPClientError.connectTimeout, .timedOut),
        ("read timeout", HTTPClientError.readTimeout, .timedOut),
        ("deadline", HTTPClientError.deadlineExceeded, .timedOut),
        ("NIO connect timeout", ChannelError.connectTimeout(.seconds(10)), .timedOut),
        ("refused", HTTPClientError.remoteConnectionClosed, .unreachable),
        ("already an AuthError", AuthError(.badCredentials, "no"), .badCredentials),
    ]

    @Test(arguments: cases) func isClassified(what: String, error: any Error & Sendable, code: AuthError.Code) {
        let classified = UpstreamFailure.classify(error, talkingTo: "https://registry.example")
        #expect(classified.code == code, "\(what): \(classified)")
        if code == .timedOut { #expect(classified.reason.contains("https://registry.example"), "\(classified.reason)") }
    }
}
