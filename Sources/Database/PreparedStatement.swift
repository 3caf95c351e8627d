import CLibPQ

/// A named statement, prepared on each connection the first time it runs there.
public struct PreparedStatement: Sendable, Hashable {
    public let name: String
    public let sql: String
    /// The statement changes nothing (a plain SELECT), so it may share a transaction with other
    /// reads in the pipeline. Leave false for anything that writes, locks or calls functions
    /// with side effects.
    public let isReadOnly: Bool
    /// Results come in PostgreSQL's binary format: no text formatting of timestamps and numbers
    /// on the server. `PostgresRow` decodes both formats.
    public let binaryResults: Bool
    /// A read that returns at most one row (a lookup by key). Such reads from one loop turn join
    /// one pipeline batch on one connection: one packet and one PostgreSQL wake-up for all of
    /// them. Larger reads spread over the connections, so no answer waits behind a long one.
    public let returnsAtMostOneRow: Bool
    /// What the statement waits on when it blocks (its table, say): while a connection is
    /// stalled behind a statement on one resource, the pool sends further statements on that
    /// resource after it, not to connections other statements need. Defaults to the name.
    public let resource: String
    /// What its result must look like; any other result poisons the connection. nil checks
    /// only that one result came (for ad-hoc statements; the App declares every shape).
    public let shape: ResultShape?

    public init(
        name: String, sql: String, readOnly: Bool = false, binaryResults: Bool = false, atMostOneRow: Bool = false,
        resource: String? = nil, returns shape: ResultShape? = nil
    ) {
        self.name = name
        self.sql = sql
        self.isReadOnly = readOnly
        self.binaryResults = binaryResults
        self.returnsAtMostOneRow = atMostOneRow
        self.resource = resource ?? name
        self.shape = shape
    }
}

/// The result a statement must produce: its command tag's verb, and for statements that return
/// rows, each column's name and type. Checked on every result, so a result meant for another
/// statement (from a pooler or proxy that mixed up sessions, say) is never decoded as this one's.
public struct ResultShape: Sendable, Hashable {
    /// The first word of the command tag: `SELECT`, `INSERT`, `UPDATE`, `DELETE`…
    public let command: String
    /// The columns, in order; empty for a statement that returns no rows.
    public let columns: [Column]

    public struct Column: Sendable, Hashable {
        public let name: String
        public let type: ColumnType
        public init(_ name: String, _ type: ColumnType) {
            self.name = name
            self.type = type
        }
    }

    /// A family of PostgreSQL types a column may have (schemas differ: `varchar` or `text`,
    /// `timestamp` or `timestamptz`, `int4` or `int8`).
    public enum ColumnType: Sendable, Hashable {
        case integer, text, boolean, timestamp, void

        func accepts(_ oid: UInt32) -> Bool {
            switch self {
            case .integer: oid == PostgresType.int2 || oid == PostgresType.int4 || oid == PostgresType.int8
            case .text: oid == PostgresType.text || oid == PostgresType.varchar || oid == PostgresType.bpchar || oid == PostgresType.name
            case .boolean: oid == PostgresType.bool
            case .timestamp: oid == PostgresType.timestamp || oid == PostgresType.timestamptz
            case .void: oid == PostgresType.void
            }
        }
    }

    /// A SELECT returning rows with these columns.
    public static func select(_ columns: [Column]) -> ResultShape {
        ResultShape(command: "SELECT", columns: columns)
    }

    /// Another statement returning rows (`… RETURNING`); `command` is its tag's verb.
    public static func rows(_ command: String, _ columns: [Column]) -> ResultShape {
        ResultShape(command: command, columns: columns)
    }

    /// A statement that returns no rows.
    public static func command(_ command: String) -> ResultShape {
        ResultShape(command: command, columns: [])
    }

    /// What is wrong with `result` (a `PGRES_TUPLES_OK` or `PGRES_COMMAND_OK` result) for this
    /// shape, or nil when it fits; `taggedRows` is the count in its command tag, which the rows
    /// received must match, and `atMostOneRow` also bounds the row count.
    func mismatch(_ result: OpaquePointer, taggedRows: Int?, atMostOneRow: Bool) -> String? {
        let status = PQresultStatus(result)
        let tag = String(cString: PQcmdStatus(result))
        let verb = tag.prefix { $0 != " " }
        guard verb == command else { return "command tag \"\(tag)\" where \(command) was expected" }
        if columns.isEmpty {
            guard status == PGRES_COMMAND_OK else { return "rows where \(command) returns none" }
            return nil
        }
        guard status == PGRES_TUPLES_OK else { return "no rows description where \(columns.count) columns were expected" }
        guard PQnfields(result) == Int32(columns.count) else {
            return "\(PQnfields(result)) columns where \(columns.count) were expected"
        }
        for (index, column) in columns.enumerated() {
            let name = PQfname(result, Int32(index)).map { String(cString: $0) } ?? ""
            let oid = UInt32(PQftype(result, Int32(index)))
            guard name == column.name, column.type.accepts(oid) else {
                return "column \(index) is \(name) of type \(oid) where \(column.name) (\(column.type)) was expected"
            }
        }
        let rows = Int(PQntuples(result))
        // The tag counts the rows the server sent: fewer or more here means rows went astray.
        guard taggedRows == rows else { return "\(rows) rows under the tag \"\(tag)\"" }
        if atMostOneRow && rows > 1 { return "\(rows) rows where at most one was expected" }
        return nil
    }
}
