import Server

/// The task API's handlers: parse and validate, call the repository, write Flask-shaped JSON
/// (sorted keys, ASCII-escaped, trailing newline). Reads carry an `ETag` and answer conditional
/// requests (RFC 9110 §13); writes honour `If-Match`/`If-None-Match`; a create honours
/// `Idempotency-Key`.
struct TaskRoutes: Sendable {
    let store: any TaskStore
    /// Whether task PUT and DELETE must carry `If-Match` (428 without it).
    var requireIfMatch = false
    /// How long an idempotency key and its answer are kept.
    var idempotencyKeyLifetime: Duration = .seconds(86_400)
    /// Seconds a client is told to wait before retrying a key whose first request is in flight.
    var retryAfterSeconds = 1
    /// How lists too long to hold are written.
    var streaming = ListStreaming()

    func register(on router: inout Router) {
        router.add(.get, "/api/tasks") { try await listTasks($0) }
        router.add(.post, "/api/tasks") { try await createTask($0) }
        router.add(.get, "/api/tasks/:id") { try await getTask($0) }
        router.add(.put, "/api/tasks/:id") { try await updateTask($0) }
        router.add(.delete, "/api/tasks/:id") { try await deleteTask($0) }
        router.add(.get, "/api/settings") { try await getSettings($0) }
        router.add(.put, "/api/settings") { try await putSettings($0) }
    }

    func listTasks(_ request: HTTPRequest) async throws -> HTTPResponse {
        let (query, limit) = try RequestValidation.listQuery(request.query)
        // A conditional request reads only the revision first: a match costs no list.
        if request.headers.contains("If-None-Match") || request.headers.contains("If-Match"),
           let revision = try await store.listRevision(),
           let answer = try Self.evaluateRead(request, current: Self.listTag(revision, query, limit: limit)) {
            return answer
        }
        // A page reads one row more than it holds, to know whether another page follows.
        let list = try await store.list(query, limit: (limit ?? streaming.bufferedRows) + 1)
        var response: HTTPResponse
        if let limit {
            response = HTTPResponse.json(200, list.body(ofFirst: limit, Self.body))
            if list.tasks.count > limit {
                var next = query
                next.offset += limit
                response.headers["Link"] = "<\(Self.pagePath(next, limit: limit))>; rel=\"next\""
            }
        } else if list.tasks.count <= streaming.bufferedRows {
            response = HTTPResponse.json(200, list.body(ofFirst: list.tasks.count, Self.body))
        } else {
            response = try await streamedList(query)
        }
        if let revision = list.revision { response.headers["ETag"] = Self.listTag(revision, query, limit: limit).headerValue }
        return response
    }

    /// A list's JSON, written whole.
    private static func body(_ tasks: ArraySlice<TaskItem>) -> [UInt8] {
        var json = JSONWriter(capacity: 64 + tasks.count * 220)
        json.beginArray()
        for task in tasks { task.write(to: &json) }
        json.endArray()
        json.newline()
        return json.bytes
    }

    /// The path of a page, every parameter written from validated values.
    static func pagePath(_ query: ListQuery, limit: Int) -> String {
        var parameters: [String] = []
        if let sortBy = query.sortBy { parameters += ["sort_by=\(sortBy.rawValue)", "sort_order=\(query.descending ? "desc" : "asc")"] }
        if let status = query.status { parameters.append("status=\(status.rawValue)") }
        parameters += ["limit=\(limit)", "offset=\(query.offset)"]
        return "/api/tasks?" + parameters.joined(separator: "&")
    }

    /// A list longer than `streaming.bufferedRows`: read again from a cursor (opened before the
    /// answer's head goes out, so a failure to open is still an error answer), one batch at a
    /// time, each written before the next is read, so its memory is a batch and the socket's
    /// output bound whatever the client's speed. The bytes are those of the list written whole.
    private func streamedList(_ query: ListQuery) async throws -> HTTPResponse {
        guard await streaming.slots.take(within: streaming.slotWait) else {
            throw Saturated(message: "Too many long lists are being sent, try again shortly")
        }
        let slot = ListStreaming.Lease(streaming.slots)
        let cursor = try await store.openList(query, batchRows: streaming.fetchRows)
        // The first batch is read before the head goes out: a database that fails at once is
        // still answered 503; a failure later can only cut the body short.
        let first = try await cursor.next()
        // The slot and the cursor go when the answer does: written, or dropped unwritten (HEAD).
        return HTTPResponse(status: 200, headers: HTTPHeaders([("Content-Type", "application/json")])) { writer in
            withExtendedLifetime(slot) {}
            var json = JSONWriter(capacity: 16)
            json.beginArray()
            var batch = first
            while let tasks = batch {
                for task in tasks { task.write(to: &json) }
                try await writer.write(json.takeBytes(reservingCapacity: tasks.count * 220 + 16))
                batch = try await cursor.next()
            }
            json.endArray()
            json.newline()
            try await writer.write(json.takeBytes())
        }
    }

    /// The list's weak tag: its revision, the order it is sorted in, and the filter and page
    /// when asked for (the list without them keeps its tag of before).
    static func listTag(_ revision: Int64, _ query: ListQuery, limit: Int?) -> EntityTag {
        var tag = "\(revision)." + (query.sortBy.map { "\($0.rawValue).\(query.descending ? "desc" : "asc")" } ?? "id")
        if let status = query.status { tag += ".status=\(status.rawValue)" }
        if query.offset > 0 || limit != nil { tag += ".offset=\(query.offset)" }
        if let limit { tag += ".limit=\(limit)" }
        return EntityTag(tag, weak: true)
    }

    func getTask(_ request: HTTPRequest) async throws -> HTTPResponse {
        guard let task = try await store.find(id: try taskID(request)) else { throw APIError.taskNotFound }
        return try Self.evaluateRead(request, current: task.etag) ?? Self.response(200, task)
    }

    func createTask(_ request: HTTPRequest) async throws -> HTTPResponse {
        let newTask = try RequestValidation.newTask(try RequestValidation.jsonObject(request))
        guard let key = try IdempotencyKey.parse(request.headers) else {
            let task = try await store.create(newTask)
            return Self.created(RecordedAnswer(status: 201, taskID: task.value.id, etag: task.etag, body: Self.body(task.value)))
        }
        switch try await store.create(newTask, idempotencyKey: key, keptFor: idempotencyKeyLifetime, render: { Self.body($0.value) }) {
        case .created(let task, let body):
            return Self.created(RecordedAnswer(status: 201, taskID: task.value.id, etag: task.etag, body: body))
        case .replayed(let answer):
            var response = Self.created(answer)
            response.headers["Idempotent-Replayed"] = "true"
            return response
        case .inProgress:
            throw HTTPError(409, "A request with this Idempotency-Key is still being processed", headers: [("Retry-After", String(retryAfterSeconds))])
        case .keyReused:
            throw APIError(status: 422, message: "This Idempotency-Key was already used for a different request")
        }
    }

    func updateTask(_ request: HTTPRequest) async throws -> HTTPResponse {
        let id = try taskID(request)
        let update = try RequestValidation.taskUpdate(try RequestValidation.jsonObject(request))
        switch try await store.update(id: id, update, if: try writePrecondition(request, required: requireIfMatch)) {
        case .written(let task): return Self.response(200, task)
        case .notFound: throw APIError.taskNotFound
        case .preconditionFailed: throw APIError.preconditionFailed
        }
    }

    func deleteTask(_ request: HTTPRequest) async throws -> HTTPResponse {
        let id = try taskID(request)
        switch try await store.delete(id: id, if: try writePrecondition(request, required: requireIfMatch)) {
        case .written: return HTTPResponse(status: 204)
        case .notFound: throw APIError.taskNotFound
        case .preconditionFailed: throw APIError.preconditionFailed
        }
    }

    func getSettings(_ request: HTTPRequest) async throws -> HTTPResponse {
        let settings = try await store.settings()
        return try Self.evaluateRead(request, current: settings.etag) ?? Self.response(200, settings)
    }

    func putSettings(_ request: HTTPRequest) async throws -> HTTPResponse {
        let darkMode = try RequestValidation.darkMode(try RequestValidation.jsonObject(request))
        switch try await store.updateSettings(darkMode: darkMode, if: try writePrecondition(request, required: false)) {
        case .written(let settings): return Self.response(200, settings)
        case .notFound, .preconditionFailed: throw APIError.preconditionFailed
        }
    }

    /// A write's `If-Match`/`If-None-Match`; 428 when `If-Match` is required and absent.
    private func writePrecondition(_ request: HTTPRequest, required: Bool) throws -> WritePrecondition {
        let precondition = WritePrecondition(
            ifMatch: EntityTagCondition(request.headers, "If-Match"), ifNoneMatch: EntityTagCondition(request.headers, "If-None-Match")
        )
        if required, precondition.ifMatch == nil { throw APIError.preconditionRequired }
        return precondition
    }

    /// A read's preconditions against the current tag (RFC 9110 §13.2.2): 412 when `If-Match`
    /// fails, 304 when `If-None-Match` matches, nil to answer in full.
    static func evaluateRead(_ request: HTTPRequest, current: EntityTag) throws -> HTTPResponse? {
        if let ifMatch = EntityTagCondition(request.headers, "If-Match"), !ifMatch.matches(current, weakly: false) {
            throw APIError.preconditionFailed
        }
        if let ifNoneMatch = EntityTagCondition(request.headers, "If-None-Match"), ifNoneMatch.matches(current, weakly: true) {
            return .notModified(current, cacheControl: CachePolicy.validated)
        }
        return nil
    }

    /// A create's answer, first or replayed: the body, `Location`, and the tag when there is one.
    private static func created(_ answer: RecordedAnswer) -> HTTPResponse {
        var response = HTTPResponse.json(answer.status, answer.body)
        response.headers["Location"] = "/api/tasks/\(answer.taskID)"
        if let etag = answer.etag { response.headers["ETag"] = etag.headerValue }
        return response
    }

    private static func response(_ status: Int, _ task: Tagged<TaskItem>) -> HTTPResponse {
        var response = HTTPResponse.json(status, body(task.value))
        response.headers["ETag"] = task.etag.headerValue
        return response
    }

    /// The task's answer body: its JSON and a newline, as Flask's `jsonify` ends it.
    static func body(_ task: TaskItem) -> [UInt8] {
        eventData(task) + [UInt8(ascii: "\n")]
    }

    /// The task's JSON as `GET /api/tasks/{id}` gives it, without the closing newline (an
    /// event's `data:` line).
    static func eventData(_ task: TaskItem) -> [UInt8] {
        var json = JSONWriter(capacity: 256)
        task.write(to: &json)
        return json.bytes
    }

    /// The settings' JSON as `GET /api/settings` gives it, without the closing newline.
    static func eventData(_ settings: SettingsItem) -> [UInt8] {
        var json = JSONWriter(capacity: 96)
        settings.write(to: &json)
        return json.bytes
    }

    private static func response(_ status: Int, _ settings: Tagged<SettingsItem>) -> HTTPResponse {
        var response = HTTPResponse.json(status, eventData(settings.value) + [UInt8(ascii: "\n")])
        response.headers["ETag"] = settings.etag.headerValue
        return response
    }
}
