/// A value bound to a statement parameter; sent in PostgreSQL's text format.
public enum PostgresValue: Sendable, Equatable {
    case null
    case int(Int)
    case text(String)
    case bool(Bool)
    case timestamp(PostgresTimestamp)

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
        case .timestamp(let value):
            return Array(value.isoFormatted().utf8CString)
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

    public static func < (a: Self, b: Self) -> Bool { a.microsecondsSinceEpoch < b.microsecondsSinceEpoch }

    /// Parses PostgreSQL's text output (`2024-01-01 12:00:00.123456+00`, `+05:30`, or no offset
    /// for `timestamp without time zone`, which is read as UTC).
    public init?(postgresText text: String) {
        self.init(postgresBytes: Array(text.utf8)[...])
    }

    /// `init(postgresText:)` over the UTF-8 bytes of the text.
    init?(postgresBytes: ArraySlice<UInt8>) {
        var bytes = postgresBytes
        func number(_ count: Int) -> Int? {
            guard bytes.count >= count else { return nil }
            var value = 0
            for byte in bytes.prefix(count) {
                guard byte >= 0x30 && byte <= 0x39 else { return nil }
                value = value * 10 + Int(byte - 0x30)
            }
            bytes = bytes.dropFirst(count)
            return value
        }
        func expect(_ byte: UInt8) -> Bool {
            guard bytes.first == byte else { return false }
            bytes = bytes.dropFirst()
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
            while let byte = bytes.first, byte >= 0x30 && byte <= 0x39 {
                if digits < 6 { micros = micros * 10 + Int(byte - 0x30) }
                digits += 1
                bytes = bytes.dropFirst()
            }
            guard digits > 0 else { return nil }
            if digits < 6 { for _ in digits..<6 { micros *= 10 } }
        }
        var offsetSeconds = 0
        if let sign = bytes.first, sign == UInt8(ascii: "+") || sign == UInt8(ascii: "-") {
            bytes = bytes.dropFirst()
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
            offsetSeconds = sign == UInt8(ascii: "-") ? -offset : offset
        }
        guard bytes.isEmpty, (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second < 61 else {
            return nil
        }
        let days = daysFromCivil(year: year, month: month, day: day)
        let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offsetSeconds
        microsecondsSinceEpoch = Int64(seconds) * 1_000_000 + Int64(micros)
    }

    /// `YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00`, as Python's `datetime.isoformat()` writes an aware
    /// UTC value: the fraction only when it is not zero.
    public func isoFormatted() -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(32)
        writeISO(into: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Appends `isoFormatted()` to `bytes` without an intermediate string.
    public func writeISO(into bytes: inout [UInt8]) {
        var seconds = microsecondsSinceEpoch / 1_000_000
        var fraction = microsecondsSinceEpoch % 1_000_000
        if fraction < 0 {
            fraction += 1_000_000
            seconds -= 1
        }
        var days = seconds / 86_400
        var secondOfDay = seconds % 86_400
        if secondOfDay < 0 {
            secondOfDay += 86_400
            days -= 1
        }
        let (year, month, day) = civilFromDays(Int(days))
        func two(_ value: Int) {
            bytes.append(UInt8(0x30 + value / 10))
            bytes.append(UInt8(0x30 + value % 10))
        }
        two(year / 100 % 100)
        two(year % 100)
        bytes.append(UInt8(ascii: "-"))
        two(month)
        bytes.append(UInt8(ascii: "-"))
        two(day)
        bytes.append(UInt8(ascii: "T"))
        let sod = Int(secondOfDay)
        two(sod / 3600)
        bytes.append(UInt8(ascii: ":"))
        two(sod / 60 % 60)
        bytes.append(UInt8(ascii: ":"))
        two(sod % 60)
        if fraction != 0 {
            let f = Int(fraction)
            bytes.append(UInt8(ascii: "."))
            two(f / 10_000)
            two(f / 100 % 100)
            two(f % 100)
        }
        bytes.append(contentsOf: [UInt8(ascii: "+"), 0x30, 0x30, UInt8(ascii: ":"), 0x30, 0x30])
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

/// The date of a day count since 1970-01-01 (inverse of `daysFromCivil`).
func civilFromDays(_ days: Int) -> (year: Int, month: Int, day: Int) {
    let z = days + 719_468
    let era = (z >= 0 ? z : z - 146_096) / 146_097
    let dayOfEra = z - era * 146_097
    let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
    let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
    let mp = (5 * dayOfYear + 2) / 153
    let day = dayOfYear - (153 * mp + 2) / 5 + 1
    let month = mp < 10 ? mp + 3 : mp - 9
    return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
}
