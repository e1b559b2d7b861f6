import Foundation
import Testing

@testable import OCIConnectorProxy

@Suite struct HTTPDateTests {
    /// IMF-fixdate (RFC 9110 §5.6.7), against Python's `email.utils.formatdate(usegmt=True)`.
    @Test(arguments: [
        (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
        (784_111_777, "Sun, 06 Nov 1994 08:49:37 GMT"),  // RFC 9110's own example
        (951_782_400, "Tue, 29 Feb 2000 00:00:00 GMT"),
        (1_796_154_245, "Tue, 01 Dec 2026 19:44:05 GMT"),
        (4_102_444_799, "Thu, 31 Dec 2099 23:59:59 GMT"),
    ])
    func formatsIMFFixdate(seconds: Int, expected: String) {
        #expect(HTTPDate.string(secondsSince1970: seconds) == expected)
    }

    @Test func theCacheGivesTheCurrentSecond() {
        var cache = HTTPDate.Cache()
        let before = Int(Date().timeIntervalSince1970)
        let text = cache.now()
        let after = Int(Date().timeIntervalSince1970)
        #expect([before, after].map { HTTPDate.string(secondsSince1970: $0) }.contains(text))
    }
}
