import Testing

@testable import OCIConnectorProxy

@Suite struct RequestIDTests {
    @Test func idsAreEightHexDigitsAndDistinct() {
        let ids = (0..<100_000).map { _ in RequestID.next() }
        #expect(Set(ids).count == ids.count)
        #expect(ids.allSatisfy { $0.utf8.count == 8 && $0.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) } })
    }

    @Test(arguments: [(0 as UInt32, "00000000"), (0xA, "0000000a"), (0xDEAD_BEEF, "deadbeef")])
    func formatsWithLeadingZeros(value: UInt32, expected: String) {
        #expect(RequestID.format(value) == expected)
    }

    @Test func consecutiveCountersDoNotLookAlike() {
        let mixed = (0..<64 as Range<UInt32>).map(RequestID.mix)
        #expect(Set(mixed).count == 64)
        // Neighbours differ in about half their bits, not in the last one or two.
        let flipped = zip(mixed, mixed.dropFirst()).map { ($0 ^ $1).nonzeroBitCount }
        #expect(flipped.allSatisfy { $0 >= 6 }, "\(flipped)")
    }
}
