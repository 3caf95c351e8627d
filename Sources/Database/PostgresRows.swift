import CLibPQ

/// The rows of one query result, copied out of libpq's `PGresult` (text or binary format).
public struct PostgresRows: Sendable {
    public let columns: [String]
    /// Each column's type OID.
    let types: [UInt32]
    /// The cells are in binary format (else text).
    let isBinary: Bool
    /// Every cell's bytes, back to back.
    let bytes: [UInt8]
    /// Row-major: where each cell's bytes lie in `bytes` (length -1 for SQL NULL).
    let cells: [CellRange]
    /// Rows changed by an INSERT/UPDATE/DELETE (from the command tag).
    public let affectedRows: Int

    init(columns: [String], types: [UInt32], isBinary: Bool, bytes: [UInt8], cells: [CellRange], affectedRows: Int) {
        self.columns = columns
        self.types = types
        self.isBinary = isBinary
        self.bytes = bytes
        self.cells = cells
        self.affectedRows = affectedRows
    }

    static let empty = PostgresRows(columns: [], types: [], isBinary: false, bytes: [], cells: [], affectedRows: 0)

    public var count: Int { columns.isEmpty ? 0 : cells.count / columns.count }
    public var isEmpty: Bool { count == 0 }
    public var first: PostgresRow? { isEmpty ? nil : self[0] }

    public subscript(index: Int) -> PostgresRow {
        precondition(index >= 0 && index < count, "row \(index) out of range 0..<\(count)")
        return PostgresRow(rows: self, offset: index * columns.count)
    }

    /// Every row, in order.
    public var rows: [PostgresRow] { (0..<count).map { self[$0] } }
}

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

    private func index(of name: String) throws -> Int {
        guard let index = rows.columns.firstIndex(of: name) else {
            throw PostgresError(.decoding, "no column named \(name)")
        }
        return index
    }

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

    /// Appends a `timestamptz` or `timestamp` cell as `PostgresTimestamp.isoFormatted()` would
    /// write it, converting PostgreSQL's text directly when it has the usual shape.
    public func writeISOTimestamp(_ column: Int, into output: inout [UInt8]) throws {
        if !rows.isBinary {
            let bytes = try requiredBytes(column)
            if bytes.withUnsafeBufferPointer({ appendISO(fromPostgresText: $0, to: &output) }) { return }
        }
        try timestamp(column).writeISO(into: &output)
    }

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

/// Where one cell's text lies in `PostgresRows.bytes`; length -1 is SQL NULL.
struct CellRange: Sendable {
    let start: Int32
    let length: Int32
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

/// The type OIDs a binary result is decoded by (`pg_type.oid`, fixed for built-in types).
enum PostgresType {
    static let bool: UInt32 = 16
    static let bytea: UInt32 = 17
    static let int8: UInt32 = 20
    static let int2: UInt32 = 21
    static let int4: UInt32 = 23
    static let float4: UInt32 = 700
    static let float8: UInt32 = 701
    static let date: UInt32 = 1082
    static let timestamp: UInt32 = 1114
    static let timestamptz: UInt32 = 1184
    static let numeric: UInt32 = 1700
    static let uuid: UInt32 = 2950
    static let name: UInt32 = 19
    static let text: UInt32 = 25
    static let bpchar: UInt32 = 1042
    static let varchar: UInt32 = 1043
    static let void: UInt32 = 2278
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

/// Why libpq would reject `conninfo` (a URL or `key=value` string), or nil when it parses.
public func validateConninfo(_ conninfo: String) -> String? {
    var message: UnsafeMutablePointer<CChar>?
    guard let options = PQconninfoParse(conninfo, &message) else {
        defer { if let message { PQfreemem(message) } }
        return message.map { String(cString: $0).trimmingTrailingWhitespace() } ?? "unparsable"
    }
    PQconninfoFree(options)
    return nil
}

extension String {
    func trimmingTrailingWhitespace() -> String {
        var text = Substring(self)
        while let last = text.last, last.isWhitespace { text = text.dropLast() }
        return String(text)
    }
}
