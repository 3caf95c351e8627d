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

    /// 0001-01-01T00:00:00Z up to, not including, 10000-01-01: the instants `isoFormatted()`
    /// can write (four-digit years).
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
        // Written into a stack buffer and appended once: appending byte by byte checked the
        // array's uniqueness and capacity 32 times per timestamp (8% of a list's server CPU).
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 32) { buffer in
            var count = 0
            func put(_ byte: UInt8) {
                buffer[count] = byte
                count += 1
            }
            func two(_ value: Int) {
                put(UInt8(truncatingIfNeeded: 0x30 + value / 10))
                put(UInt8(truncatingIfNeeded: 0x30 + value % 10))
            }
            two(year / 100 % 100)
            two(year % 100)
            put(UInt8(ascii: "-"))
            two(month)
            put(UInt8(ascii: "-"))
            two(day)
            put(UInt8(ascii: "T"))
            let sod = Int(secondOfDay)
            two(sod / 3600)
            put(UInt8(ascii: ":"))
            two(sod / 60 % 60)
            put(UInt8(ascii: ":"))
            two(sod % 60)
            if fraction != 0 {
                let f = Int(fraction)
                put(UInt8(ascii: "."))
                two(f / 10_000)
                two(f / 100 % 100)
                two(f % 100)
            }
            for byte in "+00:00".utf8 { put(byte) }
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[..<count]))
        }
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

/// Appends Python's isoformat of a timestamp given as PostgreSQL prints it in a UTC session —
/// `YYYY-MM-DD HH:MM:SS[.f…][+00]` becomes `YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00` — by moving bytes,
/// without computing the instant. False (and nothing appended) for any other shape: another
/// offset, a year beyond 9999, `infinity`…; the caller then parses and formats.
func appendISO(fromPostgresText text: UnsafeBufferPointer<UInt8>, to output: inout [UInt8]) -> Bool {
    let count = text.count
    guard count >= 19, let base = text.baseAddress else { return false }
    @inline(__always) func isDigit(_ index: Int) -> Bool { base[index] &- 0x30 < 10 }
    for index in [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18] where !isDigit(index) { return false }
    guard base[4] == UInt8(ascii: "-"), base[7] == UInt8(ascii: "-"), base[10] == UInt8(ascii: " "),
          base[13] == UInt8(ascii: ":"), base[16] == UInt8(ascii: ":") else { return false }
    var end = 19
    var fractionDigits = 0
    var fractionIsZero = true
    if end < count, base[end] == UInt8(ascii: ".") {
        end += 1
        while end < count, isDigit(end) {
            if base[end] != UInt8(ascii: "0") { fractionIsZero = false }
            fractionDigits += 1
            end += 1
        }
        guard (1...6).contains(fractionDigits) else { return false }
    }
    // No offset (`timestamp`, read as UTC) or exactly "+00" (`timestamptz` in a UTC session).
    if end != count {
        guard count - end == 3, base[end] == UInt8(ascii: "+"), base[end + 1] == UInt8(ascii: "0"),
              base[end + 2] == UInt8(ascii: "0") else { return false }
    }
    output.append(contentsOf: UnsafeBufferPointer(start: base, count: 10))
    output.append(UInt8(ascii: "T"))
    output.append(contentsOf: UnsafeBufferPointer(start: base + 11, count: 8))
    if fractionDigits > 0 && !fractionIsZero {
        output.append(contentsOf: UnsafeBufferPointer(start: base + 19, count: fractionDigits + 1))
        for _ in fractionDigits..<6 { output.append(UInt8(ascii: "0")) }
    }
    let offset: StaticString = "+00:00"
    output.append(contentsOf: UnsafeBufferPointer(start: offset.utf8Start, count: offset.utf8CodeUnitCount))
    return true
}
