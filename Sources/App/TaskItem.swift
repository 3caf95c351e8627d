import Database
import Server

/// The three states a task can be in, as the API and the database spell them.
enum TaskStatus: String, CaseIterable, Sendable {
    case todo = "TODO"
    case inProgress = "IN_PROGRESS"
    case done = "DONE"
}

/// One row of `tasks`, as the API returns it.
struct TaskItem: Equatable, Sendable {
    let id: Int
    let title: String
    let description: String?
    let status: String
    let createdAt: PostgresTimestamp
    let updatedAt: PostgresTimestamp

    init(row: PostgresRow) throws {
        id = try row.int(0)
        title = try row.string(1)
        description = try row.optionalString(2)
        status = try row.string(3)
        createdAt = try row.timestamp(4)
        updatedAt = try row.timestamp(5)
    }

    /// Writes the object with sorted keys, as Flask's `jsonify` does.
    func write(to json: inout JSONWriter) {
        json.beginObject()
        json.key("created_at")
        json.quotedASCII { createdAt.writeISO(into: &$0) }
        json.key("description")
        if let description { json.string(description) } else { json.null() }
        json.key("id")
        json.int(id)
        json.key("status")
        json.string(status)
        json.key("title")
        json.string(title)
        json.key("updated_at")
        json.quotedASCII { updatedAt.writeISO(into: &$0) }
        json.endObject()
    }
}

/// The single settings row.
struct SettingsItem: Equatable, Sendable {
    let darkMode: Bool
    let updatedAt: PostgresTimestamp

    init(row: PostgresRow) throws {
        darkMode = try row.bool(0)
        updatedAt = try row.timestamp(1)
    }

    func write(to json: inout JSONWriter) {
        json.beginObject()
        json.key("dark_mode")
        json.bool(darkMode)
        json.key("updated_at")
        json.quotedASCII { updatedAt.writeISO(into: &$0) }
        json.endObject()
    }
}
