import CLibPQ

/// The rows of one query result, copied out of libpq's `PGresult` (text format).
public struct PostgresRows: Sendable {
    public let columns: [String]
    /// Every cell's text, back to back.
    let bytes: [UInt8]
    /// Row-major: where each cell's text lies in `bytes` (length -1 for SQL NULL).
    let cells: [CellRange]
    /// Rows changed by an INSERT/UPDATE/DELETE (from the command tag).
    public let affectedRows: Int

    init(columns: [String], bytes: [UInt8], cells: [CellRange], affectedRows: Int) {
        self.columns = columns
        self.bytes = bytes
        self.cells = cells
        self.affectedRows = affectedRows
    }

    static let empty = PostgresRows(columns: [], bytes: [], cells: [], affectedRows: 0)

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

    private func cell(_ column: Int) throws -> String? {
        try cellBytes(column).map { String(decoding: $0, as: UTF8.self) }
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

    private func required(_ column: Int) throws -> String {
        guard let value = try cell(column) else {
            throw PostgresError(.decoding, "column \(rows.columns[column]) is NULL")
        }
        return value
    }

    public func isNull(_ column: Int) throws -> Bool { try cellBytes(column) == nil }

    /// `int2`/`int4`/`int8` (or any integer text).
    public func int(_ column: Int) throws -> Int {
        let bytes = try requiredBytes(column)
        guard let value = parseInteger(bytes) else {
            throw PostgresError(.decoding, "column \(rows.columns[column]) is not an integer: \(String(decoding: bytes, as: UTF8.self))")
        }
        return value
    }

    /// `text`, `varchar`, enum types and anything else, as PostgreSQL prints it.
    public func string(_ column: Int) throws -> String { try required(column) }

    public func optionalString(_ column: Int) throws -> String? { try cell(column) }

    public func bool(_ column: Int) throws -> Bool {
        let bytes = try requiredBytes(column)
        switch Array(bytes) {
        case [UInt8(ascii: "t")]: return true
        case [UInt8(ascii: "f")]: return false
        default: throw PostgresError(.decoding, "column \(rows.columns[column]) is not a boolean: \(String(decoding: bytes, as: UTF8.self))")
        }
    }

    /// The cell's text as PostgreSQL sent it (UTF-8), without decoding; nil for SQL NULL. For
    /// writing a value out again (JSON, say) without making a `String` first.
    public func utf8(_ column: Int) throws -> ArraySlice<UInt8>? { try cellBytes(column) }

    /// Appends a `timestamptz` or `timestamp` cell as `PostgresTimestamp.isoFormatted()` would
    /// write it, converting PostgreSQL's text directly when it has the usual shape.
    public func writeISOTimestamp(_ column: Int, into output: inout [UInt8]) throws {
        let bytes = try requiredBytes(column)
        let converted = bytes.withUnsafeBufferPointer { appendISO(fromPostgresText: $0, to: &output) }
        if !converted { try timestamp(column).writeISO(into: &output) }
    }

    /// `timestamptz` or `timestamp` (read as UTC).
    public func timestamp(_ column: Int) throws -> PostgresTimestamp {
        let bytes = try requiredBytes(column)
        guard let value = PostgresTimestamp(postgresBytes: bytes) else {
            throw PostgresError(.decoding, "column \(rows.columns[column]) is not a timestamp: \(String(decoding: bytes, as: UTF8.self))")
        }
        return value
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

/// A named statement, prepared on each connection the first time it runs there.
public struct PreparedStatement: Sendable, Hashable {
    public let name: String
    public let sql: String
    /// The statement changes nothing (a plain SELECT), so it may share a transaction with other
    /// reads in the pipeline. Leave false for anything that writes, locks or calls functions
    /// with side effects.
    public let isReadOnly: Bool

    public init(name: String, sql: String, readOnly: Bool = false) {
        self.name = name
        self.sql = sql
        self.isReadOnly = readOnly
    }
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
