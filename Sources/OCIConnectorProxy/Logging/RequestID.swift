import Synchronization

/// Request ids for the log: eight lowercase hex digits, different for each of 2³² requests in a row.
///
/// The id only tells one log line from another, so it needs no system randomness: a counter from
/// a random start, mixed so that consecutive ids do not look alike. A `UUID` per request cost a
/// tenth of what writing the request's log line did.
enum RequestID {
    private static let counter = Atomic<UInt32>(UInt32.random(in: .min ... .max))

    /// The next id.
    static func next() -> String {
        format(mix(counter.wrappingAdd(1, ordering: .relaxed).oldValue))
    }

    /// Eight lowercase hex digits.
    static func format(_ value: UInt32) -> String {
        let hex = String(value, radix: 16)
        return hex.utf8.count == 8 ? hex : String(repeating: "0", count: 8 - hex.utf8.count) + hex
    }

    /// A bijection of 32-bit values (xor-shifts and odd multipliers, each invertible), so that
    /// distinct counter values give distinct ids.
    static func mix(_ value: UInt32) -> UInt32 {
        var x = value
        x ^= x >> 16
        x &*= 0x7FEB_352D
        x ^= x >> 15
        x &*= 0x846C_A68B
        x ^= x >> 16
        return x
    }
}
