import Database
import Server

/// The three states a task can be in, as the API and the database spell them.
enum TaskStatus: String, CaseIterable, Sendable {
    case todo = "TODO"
    case inProgress = "IN_PROGRESS"
    case done = "DONE"
}

/// One row of `tasks` (columns as `Statements.taskColumns` selects them), as the API returns
/// it. It keeps the row and writes JSON straight from the row's bytes: no `String` per column,
/// no round trip of the timestamps through numbers.
struct TaskItem: Sendable {
    let row: PostgresRow

    init(row: PostgresRow) {
        self.row = row
    }

    /// Writes the object with sorted keys, as Flask's `jsonify` does; throws when a column does
    /// not hold what the schema promises.
    func write(to json: inout JSONWriter) throws {
        json.beginObject()
        json.key("created_at")
        try json.quotedASCII { try row.writeISOTimestamp(4, into: &$0) }
        json.key("description")
        if let description = try row.utf8(2) { json.string(utf8: description) } else { json.null() }
        json.key("id")
        json.int(try row.int(0))
        json.key("status")
        json.string(utf8: try required(3))
        json.key("title")
        json.string(utf8: try required(1))
        json.key("updated_at")
        try json.quotedASCII { try row.writeISOTimestamp(5, into: &$0) }
        json.endObject()
    }

    private func required(_ column: Int) throws -> ArraySlice<UInt8> {
        guard let value = try row.utf8(column) else { throw PostgresError(.decoding, "column \(column) of a task is NULL") }
        return value
    }
}

/// The single settings row (`dark_mode, updated_at`); like `TaskItem`, it writes the timestamp
/// straight from the row.
struct SettingsItem: Sendable {
    let darkMode: Bool
    let row: PostgresRow

    init(row: PostgresRow) throws {
        darkMode = try row.bool(0)
        self.row = row
    }

    func write(to json: inout JSONWriter) throws {
        json.beginObject()
        json.key("dark_mode")
        json.bool(darkMode)
        json.key("updated_at")
        try json.quotedASCII { try row.writeISOTimestamp(1, into: &$0) }
        json.endObject()
    }
}
