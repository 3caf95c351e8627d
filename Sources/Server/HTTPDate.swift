import Glibc

/// The `Date` header every answer carries (RFC 9110 §6.6.1), in IMF-fixdate form, formatted
/// once per second per event loop. Only its loop's thread touches it.
final class HTTPDateHeader {
    private var second = -1
    /// `Date: Tue, 01 Dec 2026 23:00:00 GMT` and CRLF, for `second`.
    private var line: [UInt8] = []

    /// The header line for the current second.
    func current() -> [UInt8] {
        let now = Int(time(nil))
        if now != second {
            second = now
            line = Array("Date: \(Self.imfFixdate(secondsSince1970: now))\r\n".utf8)
        }
        return line
    }

    /// `Sun, 06 Nov 1994 08:49:37 GMT` for a time in seconds since 1970 (UTC, no locale).
    static func imfFixdate(secondsSince1970: Int) -> String {
        var seconds = time_t(secondsSince1970)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func twoDigits(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(days[Int(parts.tm_wday)]), \(twoDigits(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
            + "\(twoDigits(parts.tm_hour)):\(twoDigits(parts.tm_min)):\(twoDigits(parts.tm_sec)) GMT"
    }
}
