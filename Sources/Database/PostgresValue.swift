/// A value bound to a statement parameter; sent in PostgreSQL's text format.
public enum PostgresValue: Sendable, Equatable {
    case null
    case int(Int)
    case text(String)
    case bool(Bool)

    /// A string value, or NULL when nil.
    public static func optionalText(_ value: String?) -> PostgresValue {
        value.map(PostgresValue.text) ?? .null
    }

    /// The text-format bytes, NUL-terminated for libpq; nil for NULL.
    func encoded() throws -> [CChar]? {
        switch self {
        case .null:
            return nil
        case .int(let value):
            return Array(String(value).utf8CString)
        case .bool(let value):
            return value ? [0x74, 0] : [0x66, 0]
        case .text(let value):
            if value.utf8.contains(0) {
                throw PostgresError(.invalidValue, "a text value contains a NUL byte, which PostgreSQL cannot store")
            }
            return Array(value.utf8CString)
        }
    }
}

/// An instant in UTC with microsecond precision, as PostgreSQL stores timestamps.
public struct PostgresTimestamp: Sendable, Hashable, Comparable {
    /// Microseconds since 1970-01-01T00:00:00Z.
    public var microsecondsSinceEpoch: Int64

    public init(microsecondsSinceEpoch: Int64) {
        self.microsecondsSinceEpoch = microsecondsSinceEpoch
    }

    /// 0001-01-01T00:00:00Z up to, not including, 10000-01-01: the instants with four-digit
    /// years (the text form parsed here has no other; ISO 8601 without a sign writes no other).
    static let isoRange: Range<Int64> = -62_135_596_800_000_000 ..< 253_402_300_800_000_000

    public static func < (a: Self, b: Self) -> Bool { a.microsecondsSinceEpoch < b.microsecondsSinceEpoch }

    /// Parses PostgreSQL's text output (`2024-01-01 12:00:00.123456+00`, `+05:30`, or no offset
    /// for `timestamp without time zone`, which is read as UTC).
    public init?(postgresText text: String) {
        self.init(postgresBytes: Array(text.utf8)[...])
    }

    /// `init(postgresText:)` over the UTF-8 bytes of the text.
    init?(postgresBytes: ArraySlice<UInt8>) {
        guard let value = postgresBytes.withUnsafeBufferPointer({ parseTimestamp($0) }) else { return nil }
        microsecondsSinceEpoch = value
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
func daysFromCivil(year: Int, month: Int, day: Int) -> Int {
    let y = month <= 2 ? year - 1 : year
    let era = (y >= 0 ? y : y - 399) / 400
    let yearOfEra = y - era * 400
    let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
    let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
    return era * 146_097 + dayOfEra - 719_468
}

/// Microseconds since the Unix epoch of PostgreSQL's text form of a timestamp: `YYYY-MM-DD
/// HH:MM:SS[.f…][±HH[:MM[:SS]]]` (or `T` between date and time). A cursor over the bytes, with no
/// allocation: this runs twice for every task row.
private func parseTimestamp(_ bytes: UnsafeBufferPointer<UInt8>) -> Int64? {
    var index = 0
    func number(_ count: Int) -> Int? {
        guard bytes.count - index >= count else { return nil }
        var value = 0
        for offset in index..<(index + count) {
            let digit = bytes[offset] &- 0x30
            guard digit < 10 else { return nil }
            value = value * 10 + Int(digit)
        }
        index += count
        return value
    }
    func expect(_ byte: UInt8) -> Bool {
        guard index < bytes.count, bytes[index] == byte else { return false }
        index += 1
        return true
    }
    guard let year = number(4), expect(UInt8(ascii: "-")), let month = number(2), expect(UInt8(ascii: "-")),
          let day = number(2), expect(UInt8(ascii: " ")) || expect(UInt8(ascii: "T")),
          let hour = number(2), expect(UInt8(ascii: ":")), let minute = number(2), expect(UInt8(ascii: ":")),
          let second = number(2)
    else { return nil }
    var micros = 0
    if expect(UInt8(ascii: ".")) {
        var digits = 0
        while index < bytes.count, bytes[index] &- 0x30 < 10 {
            if digits < 6 { micros = micros * 10 + Int(bytes[index] &- 0x30) }
            digits += 1
            index += 1
        }
        guard digits > 0 else { return nil }
        if digits < 6 { for _ in digits..<6 { micros *= 10 } }
    }
    var offsetSeconds = 0
    if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") {
        let negative = bytes[index] == UInt8(ascii: "-")
        index += 1
        guard let hours = number(2) else { return nil }
        var offset = hours * 3600
        if expect(UInt8(ascii: ":")) {
            guard let minutes = number(2) else { return nil }
            offset += minutes * 60
            if expect(UInt8(ascii: ":")) {
                guard let seconds = number(2) else { return nil }
                offset += seconds
            }
        }
        offsetSeconds = negative ? -offset : offset
    }
    guard index == bytes.count, (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second < 61 else {
        return nil
    }
    let days = daysFromCivil(year: year, month: month, day: day)
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offsetSeconds
    return Int64(seconds) * 1_000_000 + Int64(micros)
}
