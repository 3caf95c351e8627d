import CLibPQ

/// The rows of one query result, copied out of libpq's `PGresult` (text format).
public struct PostgresRows: Sendable {
    public let columns: [String]
    /// Column type OIDs, as `PQftype` reports them.
    let types: [UInt32]
    /// Row-major cell values; nil is SQL NULL.
    let cells: [String?]
    /// Rows changed by an INSERT/UPDATE/DELETE (from the command tag).
    public let affectedRows: Int

    init(columns: [String], types: [UInt32], cells: [String?], affectedRows: Int) {
        self.columns = columns
        self.types = types
        self.cells = cells
        self.affectedRows = affectedRows
    }

    static let empty = PostgresRows(columns: [], types: [], cells: [], affectedRows: 0)

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

    private func cell(_ column: Int) throws -> String? {
        guard column >= 0 && column < rows.columns.count else {
            throw PostgresError(.decoding, "no column at index \(column)")
        }
        return rows.cells[offset + column]
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

    public func isNull(_ column: Int) throws -> Bool { try cell(column) == nil }

    /// `int2`/`int4`/`int8` (or any integer text).
    public func int(_ column: Int) throws -> Int {
        let text = try required(column)
        guard let value = Int(text) else { throw PostgresError(.decoding, "column \(rows.columns[column]) is not an integer: \(text)") }
        return value
    }

    /// `text`, `varchar`, enum types and anything else, as PostgreSQL prints it.
    public func string(_ column: Int) throws -> String { try required(column) }

    public func optionalString(_ column: Int) throws -> String? { try cell(column) }

    public func bool(_ column: Int) throws -> Bool {
        switch try required(column) {
        case "t": return true
        case "f": return false
        case let text: throw PostgresError(.decoding, "column \(rows.columns[column]) is not a boolean: \(text)")
        }
    }

    /// `timestamptz` or `timestamp` (read as UTC).
    public func timestamp(_ column: Int) throws -> PostgresTimestamp {
        let text = try required(column)
        guard let value = PostgresTimestamp(postgresText: text) else {
            throw PostgresError(.decoding, "column \(rows.columns[column]) is not a timestamp: \(text)")
        }
        return value
    }

    public func int(_ name: String) throws -> Int { try int(index(of: name)) }
    public func string(_ name: String) throws -> String { try string(index(of: name)) }
    public func optionalString(_ name: String) throws -> String? { try optionalString(index(of: name)) }
    public func bool(_ name: String) throws -> Bool { try bool(index(of: name)) }
    public func timestamp(_ name: String) throws -> PostgresTimestamp { try timestamp(index(of: name)) }
}

/// A named statement, prepared on each connection the first time it runs there.
public struct PreparedStatement: Sendable, Hashable {
    public let name: String
    public let sql: String

    public init(name: String, sql: String) {
        self.name = name
        self.sql = sql
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
