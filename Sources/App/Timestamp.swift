import Server

/// An instant in UTC with microsecond precision, as the API writes it: Python's
/// `datetime.isoformat()` of an aware UTC value, as the original service did.
struct Timestamp: Sendable, Hashable, Comparable {
    /// Microseconds since 1970-01-01T00:00:00Z.
    var microsecondsSinceEpoch: Int64

    static func < (a: Self, b: Self) -> Bool { a.microsecondsSinceEpoch < b.microsecondsSinceEpoch }

    /// `YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00`, as Python's `datetime.isoformat()` writes an aware
    /// UTC value: the fraction only when it is not zero.
    func isoFormatted() -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(32)
        writeISO(into: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Appends `isoFormatted()` to `bytes` without an intermediate string.
    func writeISO(into bytes: inout [UInt8]) {
        // Written into a stack buffer and appended once: appending byte by byte checked the
        // array's uniqueness and capacity 32 times per timestamp.
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 32) { buffer in
            var output = JSONWriter.RawOutput(buffer)
            writeISO(into: &output)
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[..<output.count]))
        }
    }

    /// Writes `isoFormatted()` (at most 32 bytes).
    func writeISO(into output: inout JSONWriter.RawOutput) {
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
        output.unchecked(maximumCount: 32) { out in
            var count = 0
            @inline(__always) func put(_ byte: UInt8) {
                out[count] = byte
                count += 1
            }
            @inline(__always) func two(_ value: Int) {
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
            put(UInt8(ascii: "+")); two(0); put(UInt8(ascii: ":")); two(0)  // "+00:00"
            return count
        }
    }
}

/// The date of a day count since 1970-01-01 (inverse of `daysFromCivil`).
private func civilFromDays(_ days: Int) -> (year: Int, month: Int, day: Int) {
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

