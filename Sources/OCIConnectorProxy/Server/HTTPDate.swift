import Foundation

/// The `Date` header of answers the proxy writes itself, in HTTP's IMF-fixdate form
/// (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110 §5.6.7).
///
/// Built from the calendar fields directly: a `DateFormatter` costs more to create than the
/// answer it dates, and one must not be shared between event loops.
enum HTTPDate {
    private static let weekdays = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    /// `secondsSince1970` (UTC) as an IMF-fixdate.
    static func string(secondsSince1970: Int) -> String {
        var time = time_t(secondsSince1970)
        var fields = tm()
        gmtime_r(&time, &fields)
        return "\(weekdays[Int(fields.tm_wday)]), \(twoDigits(fields.tm_mday)) \(months[Int(fields.tm_mon)]) "
            + "\(Int(fields.tm_year) + 1900) \(twoDigits(fields.tm_hour)):\(twoDigits(fields.tm_min)):\(twoDigits(fields.tm_sec)) GMT"
    }

    /// The current second's date, formatted once per second for each cache.
    struct Cache {
        private var second = Int.min
        private var text = ""

        mutating func now() -> String {
            let now = Int(Date().timeIntervalSince1970)
            if now != second {
                second = now
                text = HTTPDate.string(secondsSince1970: now)
            }
            return text
        }
    }

    private static func twoDigits(_ value: Int32) -> String {
        value < 10 ? "0\(value)" : "\(value)"
    }
}
