import Server

/// The longest title, in Unicode code points (PostgreSQL's `varchar(200)` counts the same way).
let maxTitleLength = 200

/// A change to one field of a task: left alone, or set to a value.
enum FieldUpdate<Value: Equatable & Sendable>: Equatable, Sendable {
    case unchanged
    case set(Value)
}

/// A validated `POST /api/tasks` body.
struct NewTask: Equatable, Sendable {
    let title: String
    let description: String?
    let status: TaskStatus
}

/// A validated `PUT /api/tasks/{id}` body: only the keys that were present change.
struct TaskUpdate: Equatable, Sendable {
    var title: FieldUpdate<String> = .unchanged
    var description: FieldUpdate<String?> = .unchanged
    var status: FieldUpdate<TaskStatus> = .unchanged
}

/// Turns request bodies into validated values, or an `APIError` that says what is wrong.
/// Nothing here touches the database: a request that fails validation changes nothing.
enum RequestValidation {
    /// The body as a JSON object, after the Content-Type check.
    static func jsonObject(_ request: HTTPRequest) throws -> [String: JSONValue] {
        if let contentType = request.headers["Content-Type"], !request.body.isEmpty, !isJSONMediaType(contentType) {
            throw APIError.unsupportedMediaType
        }
        let value: JSONValue
        do {
            value = try JSONParser.parse(request.body)
        } catch {
            throw APIError.badRequest("Request body is not valid JSON")
        }
        guard case .object(let object) = value else {
            throw APIError.badRequest("Request body must be a JSON object")
        }
        return object
    }

    /// `application/json` or any `application/…+json`, parameters ignored.
    static func isJSONMediaType(_ value: String) -> Bool {
        let mediaType = value.split(separator: ";", maxSplits: 1, omittingEmptySubsequences: false)[0]
            .trimmingASCIISpaces().lowercased()
        return mediaType == "application/json" || (mediaType.hasPrefix("application/") && mediaType.hasSuffix("+json"))
    }

    static func newTask(_ object: [String: JSONValue]) throws -> NewTask {
        guard let titleValue = object["title"] else { throw APIError.badRequest("title is required") }
        let title = try validTitle(titleValue)
        let description: String?
        switch object["description"] {
        case nil, .null?: description = nil
        case .string(let text)?: description = try noNUL(text, field: "description")
        default: throw APIError.badRequest("description must be a string or null")
        }
        let status: TaskStatus
        switch object["status"] {
        case nil, .null?: status = .todo
        case let value?: status = try validStatus(value)
        }
        return NewTask(title: title, description: description, status: status)
    }

    static func taskUpdate(_ object: [String: JSONValue]) throws -> TaskUpdate {
        var update = TaskUpdate()
        if let value = object["title"] { update.title = .set(try validTitle(value)) }
        switch object["description"] {
        case nil: break
        case .null?: update.description = .set(nil)
        case .string(let text)?: update.description = .set(try noNUL(text, field: "description"))
        default: throw APIError.badRequest("description must be a string or null")
        }
        if let value = object["status"] { update.status = .set(try validStatus(value)) }
        return update
    }

    /// The list a `GET /api/tasks` asks for, and its page size when it asks for a page: `sort_by`
    /// and `sort_order` as the original reads them (anything unknown ignored); the opt-in
    /// `status` (one of the three), `limit` (1–`maxPageSize`) and `offset` (0–2147483647) are
    /// checked, 400 when they are anything else.
    static func listQuery(_ parameters: QueryParameters) throws -> (query: ListQuery, limit: Int?) {
        var query = ListQuery()
        query.sortBy = parameters["sort_by"].flatMap(TaskSortField.init(rawValue:))
        query.descending = query.sortBy != nil && parameters["sort_order"]?.lowercased() == "desc"
        if let text = parameters["status"] {
            guard let status = TaskStatus(rawValue: text) else { throw APIError.badRequest("status must be TODO, IN_PROGRESS or DONE") }
            query.status = status
        }
        if let text = parameters["offset"] { query.offset = try wholeNumber(text, "offset", in: 0...Int(Int32.max)) }
        let limit = try parameters["limit"].map { try wholeNumber($0, "limit", in: 1...maxPageSize) }
        return (query, limit)
    }

    /// The most tasks one page holds.
    static let maxPageSize = 1000

    /// Decimal digits only (no sign, no spaces), within `range`.
    private static func wholeNumber(_ text: String, _ name: String, in range: ClosedRange<Int>) throws -> Int {
        guard !text.isEmpty, text.utf8.count <= 10, text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
              let value = Int(text), range.contains(value) else {
            throw APIError.badRequest("\(name) must be a whole number from \(range.lowerBound) to \(range.upperBound)")
        }
        return value
    }

    /// `{"dark_mode": bool}`; a missing key means false, as in the original service.
    static func darkMode(_ object: [String: JSONValue]) throws -> Bool {
        switch object["dark_mode"] {
        case nil: return false
        case .bool(let value)?: return value
        default: throw APIError.badRequest("dark_mode must be a boolean")
        }
    }

    private static func validTitle(_ value: JSONValue) throws -> String {
        guard case .string(let title) = value else {
            throw APIError.badRequest(value == .null ? "title must not be null" : "title must be a string")
        }
        guard title.unicodeScalars.contains(where: { !isPythonWhitespace($0) }) else {
            throw APIError.badRequest("title must not be empty")
        }
        guard title.unicodeScalars.count <= maxTitleLength else {
            throw APIError.badRequest("title must be at most \(maxTitleLength) characters")
        }
        return try noNUL(title, field: "title")
    }

    private static func validStatus(_ value: JSONValue) throws -> TaskStatus {
        guard case .string(let text) = value, let status = TaskStatus(rawValue: text) else {
            throw APIError.badRequest("status must be one of TODO, IN_PROGRESS, DONE")
        }
        return status
    }

    private static func noNUL(_ text: String, field: String) throws -> String {
        guard !text.utf8.contains(0) else { throw APIError.badRequest("\(field) must not contain the NUL character") }
        return text
    }

    /// What Python's `str.strip()` removes: Unicode white space plus the separators U+001C–U+001F.
    private static func isPythonWhitespace(_ scalar: Unicode.Scalar) -> Bool {
        scalar.properties.isWhitespace || (0x1C...0x1F).contains(scalar.value)
    }
}

/// A path id: a plain decimal number within PostgreSQL's `integer` range, else "Task not found".
func taskID(_ request: HTTPRequest) throws -> Int {
    guard let text = request.parameters["id"], !text.isEmpty, text.utf8.count <= 10,
          text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
          let id = Int(text), id <= Int(Int32.max)
    else { throw APIError.taskNotFound }
    return id
}
