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

    /// The index of the column named `name`; a decoding error when there is none.
    public func columnIndex(_ name: String) throws -> Int {
        guard let index = columns.firstIndex(of: name) else { throw PostgresError(.decoding, "no column named \(name)") }
        return index
    }

    /// Every row, in order.
    public var rows: [PostgresRow] { (0..<count).map { self[$0] } }
}

/// Where one cell's text lies in `PostgresRows.bytes`; length -1 is SQL NULL.
struct CellRange: Sendable {
    let start: Int32
    let length: Int32
}
