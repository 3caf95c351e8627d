import Server

/// The three states a task can be in, as the API and the database spell them.
enum TaskStatus: String, CaseIterable, Sendable {
    case todo = "TODO"
    case inProgress = "IN_PROGRESS"
    case done = "DONE"
}

/// One task as the API returns it. Text fields are UTF-8 bytes (slices of the buffer they were
/// read into, so a list of tasks costs no `String` per field) and go to JSON as they are.
struct TaskItem: Sendable {
    var id: Int
    var title: ArraySlice<UInt8>
    var description: ArraySlice<UInt8>?
    var status: ArraySlice<UInt8>
    var createdAt: Timestamp
    var updatedAt: Timestamp

    /// Writes the object with sorted keys, as Flask's `jsonify` does.
    func write(to json: inout JSONWriter) {
        // Text that needs no escaping (the usual case) is copied as it is, in one append.
        guard JSONWriter.isPlain(title), JSONWriter.isPlain(status), description.map(JSONWriter.isPlain) ?? true else {
            return writeEscaping(to: &json)
        }
        json.raw(maximumCount: Self.fixedBytes + title.count + status.count + (description?.count ?? 0)) { output in
            output.literal("{\"created_at\":\"")
            createdAt.writeISO(into: &output)
            if let description {
                output.literal("\",\"description\":\"")
                output.bytes(description)
                output.literal("\",\"id\":")
            } else {
                output.literal("\",\"description\":null,\"id\":")
            }
            output.int(id)
            output.literal(",\"status\":\"")
            output.bytes(status)
            output.literal("\",\"title\":\"")
            output.bytes(title)
            output.literal("\",\"updated_at\":\"")
            updatedAt.writeISO(into: &output)
            output.literal("\"}")
        }
    }

    /// The most a task's JSON takes beside its text: keys and punctuation (80 bytes), two
    /// timestamps (32 each) and an id (20).
    private static let fixedBytes = 192

    /// The general path, escaping as it goes (and the reference the fast path is tested against).
    func writeEscaping(to json: inout JSONWriter) {
        json.beginObject()
        json.key("created_at")
        json.quotedASCII { createdAt.writeISO(into: &$0) }
        json.key("description")
        if let description { json.string(utf8: description) } else { json.null() }
        json.key("id")
        json.int(id)
        json.key("status")
        json.string(utf8: status)
        json.key("title")
        json.string(utf8: title)
        json.key("updated_at")
        json.quotedASCII { updatedAt.writeISO(into: &$0) }
        json.endObject()
    }
}

/// The single settings row as the API returns it.
struct SettingsItem: Sendable, Equatable {
    var darkMode: Bool
    var updatedAt: Timestamp

    func write(to json: inout JSONWriter) {
        json.beginObject()
        json.key("dark_mode")
        json.bool(darkMode)
        json.key("updated_at")
        json.quotedASCII { updatedAt.writeISO(into: &$0) }
        json.endObject()
    }
}
