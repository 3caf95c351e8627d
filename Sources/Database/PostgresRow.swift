/// One row of a result; columns are read by index or name and decoded to Swift types.
public struct PostgresRow: Sendable {
    let rows: PostgresRows
    let offset: Int

    /// The cell's text bytes; nil for SQL NULL.
    private func cellBytes(_ column: Int) throws -> ArraySlice<UInt8>? {
        guard column >= 0 && column < rows.columns.count else {
            throw PostgresError(.decoding, "no column at index \(column)")
        }
        let range = rows.cells[offset + column]
        guard range.length >= 0 else { return nil }
        return rows.bytes[Int(range.start)..<Int(range.start + range.length)]
    }

    private func requiredBytes(_ column: Int) throws -> ArraySlice<UInt8> {
        guard let value = try cellBytes(column) else {
            throw PostgresError(.decoding, "column \(rows.columns[column]) is NULL")
        }
        return value
    }

    private func index(of name: String) throws -> Int { try rows.columnIndex(name) }

    public func isNull(_ column: Int) throws -> Bool { try cellBytes(column) == nil }

    /// `int2`/`int4`/`int8` (or any integer text).
    public func int(_ column: Int) throws -> Int {
        let bytes = try requiredBytes(column)
        guard let value = rows.isBinary ? binaryInteger(bytes) : parseInteger(bytes) else {
            throw PostgresError(.decoding, "column \(rows.columns[column]) is not an integer: \(describe(bytes))")
        }
        return value
    }

    /// `text`, `varchar`, enum types and anything else, as PostgreSQL prints it (in a binary
    /// result: text-like types, integers and booleans).
    public func string(_ column: Int) throws -> String {
        guard let value = try optionalString(column) else {
            throw PostgresError(.decoding, "column \(rows.columns[column]) is NULL")
        }
        return value
    }

    public func optionalString(_ column: Int) throws -> String? {
        guard let bytes = try cellBytes(column) else { return nil }
        guard rows.isBinary else { return String(decoding: bytes, as: UTF8.self) }
        switch rows.types[column] {
        case PostgresType.int2, PostgresType.int4, PostgresType.int8: return String(try int(column))
        case PostgresType.bool: return try bool(column) ? "t" : "f"
        case PostgresType.timestamp, PostgresType.timestamptz, PostgresType.float4, PostgresType.float8,
             PostgresType.numeric, PostgresType.date, PostgresType.uuid, PostgresType.bytea:
            throw PostgresError(.decoding, "column \(rows.columns[column]) is not text in a binary result")
        default: return String(decoding: bytes, as: UTF8.self)  // text, varchar, name, enums: their bytes
        }
    }

    public func bool(_ column: Int) throws -> Bool {
        let bytes = try requiredBytes(column)
        switch (rows.isBinary, bytes.count == 1 ? bytes.first : nil) {
        case (true, 1), (false, UInt8(ascii: "t")): return true
        case (true, 0), (false, UInt8(ascii: "f")): return false
        default: throw PostgresError(.decoding, "column \(rows.columns[column]) is not a boolean: \(describe(bytes))")
        }
    }

    /// The cell's text as PostgreSQL sent it (UTF-8), without decoding; nil for SQL NULL. For
    /// writing a value out again (JSON, say) without making a `String` first. In a binary result
    /// this is only text for text-like columns (whose binary form is their text).
    public func utf8(_ column: Int) throws -> ArraySlice<UInt8>? { try cellBytes(column) }

    /// `utf8`, for a column that must not be NULL.
    public func requiredUTF8(_ column: Int) throws -> ArraySlice<UInt8> { try requiredBytes(column) }

    /// `timestamptz` or `timestamp` (read as UTC).
    public func timestamp(_ column: Int) throws -> PostgresTimestamp {
        let bytes = try requiredBytes(column)
        let value = rows.isBinary ? binaryTimestamp(bytes) : PostgresTimestamp(postgresBytes: bytes)
        guard let value else {
            throw PostgresError(.decoding, "column \(rows.columns[column]) is not a timestamp: \(describe(bytes))")
        }
        return value
    }

    /// A cell for an error message: its text, or its bytes in hex in a binary result.
    private func describe(_ bytes: ArraySlice<UInt8>) -> String {
        rows.isBinary ? bytes.map { String($0, radix: 16) }.joined(separator: " ") : String(decoding: bytes, as: UTF8.self)
    }

    public func int(_ name: String) throws -> Int { try int(index(of: name)) }
    public func string(_ name: String) throws -> String { try string(index(of: name)) }
    public func optionalString(_ name: String) throws -> String? { try optionalString(index(of: name)) }
    public func bool(_ name: String) throws -> Bool { try bool(index(of: name)) }
    public func timestamp(_ name: String) throws -> PostgresTimestamp { try timestamp(index(of: name)) }
}

/// A decimal integer with an optional sign, without going through a String.
private func parseInteger(_ bytes: ArraySlice<UInt8>) -> Int? {
    var digits = bytes
    var negative = false
    if let sign = digits.first, sign == UInt8(ascii: "-") || sign == UInt8(ascii: "+") {
        negative = sign == UInt8(ascii: "-")
        digits = digits.dropFirst()
    }
    guard !digits.isEmpty, digits.count <= 19 else { return nil }
    var value = 0
    for byte in digits {
        guard byte >= 0x30 && byte <= 0x39 else { return nil }
        let (times, overflow1) = value.multipliedReportingOverflow(by: 10)
        let (sum, overflow2) = times.addingReportingOverflow(Int(byte - 0x30))
        guard !overflow1 && !overflow2 else { return nil }
        value = sum
    }
    return negative ? -value : value
}

/// A binary `int2`, `int4` or `int8` (big-endian two's complement), by its length.
func binaryInteger(_ bytes: ArraySlice<UInt8>) -> Int? {
    guard bytes.count == 2 || bytes.count == 4 || bytes.count == 8 else { return nil }
    var value: UInt64 = 0
    for byte in bytes { value = value << 8 | UInt64(byte) }
    let unused = UInt64(64 - 8 * bytes.count)
    return Int(Int64(bitPattern: value << unused) >> Int64(unused))  // sign-extend
}

/// A binary `timestamp`/`timestamptz`: microseconds since 2000-01-01 UTC. nil for ±infinity and
/// for dates outside years 1–9999 (BC, or five digits), as the text parser refuses them: ISO
/// 8601 without a sign cannot write them.
func binaryTimestamp(_ bytes: ArraySlice<UInt8>) -> PostgresTimestamp? {
    guard bytes.count == 8, let micros = binaryInteger(bytes) else { return nil }
    let sinceUnixEpoch = Int64(micros).addingReportingOverflow(946_684_800_000_000)
    guard !sinceUnixEpoch.overflow, PostgresTimestamp.isoRange.contains(sinceUnixEpoch.partialValue) else { return nil }
    return PostgresTimestamp(microsecondsSinceEpoch: sinceUnixEpoch.partialValue)
}

