import Server

/// The task API's handlers: parse and validate, call the repository, write Flask-shaped JSON
/// (sorted keys, ASCII-escaped, trailing newline).
struct TaskRoutes: Sendable {
    let store: any TaskStore

    func register(on router: inout Router) {
        router.add(.get, "/api/tasks") { try await listTasks($0) }
        router.add(.post, "/api/tasks") { try await createTask($0) }
        router.add(.get, "/api/tasks/:id") { try await getTask($0) }
        router.add(.put, "/api/tasks/:id") { try await updateTask($0) }
        router.add(.delete, "/api/tasks/:id") { try await deleteTask($0) }
        router.add(.get, "/api/settings") { _ in try await getSettings() }
        router.add(.put, "/api/settings") { try await putSettings($0) }
    }

    func listTasks(_ request: HTTPRequest) async throws -> HTTPResponse {
        let sortBy = request.query["sort_by"].flatMap(TaskSortField.init(rawValue:))
        let descending = request.query["sort_order"]?.lowercased() == "desc"
        let tasks = try await store.list(sortBy: sortBy, descending: descending)
        var json = JSONWriter(capacity: 64 + tasks.count * 220)
        json.beginArray()
        for task in tasks { task.write(to: &json) }
        json.endArray()
        json.newline()
        return .json(200, json.bytes)
    }

    func getTask(_ request: HTTPRequest) async throws -> HTTPResponse {
        guard let task = try await store.find(id: try taskID(request)) else { throw APIError.taskNotFound }
        return Self.response(200, task)
    }

    func createTask(_ request: HTTPRequest) async throws -> HTTPResponse {
        let newTask = try RequestValidation.newTask(try RequestValidation.jsonObject(request))
        let task = try await store.create(newTask)
        var response = Self.response(201, task)
        response.headers["Location"] = "/api/tasks/\(task.id)"
        return response
    }

    func updateTask(_ request: HTTPRequest) async throws -> HTTPResponse {
        let id = try taskID(request)
        let update = try RequestValidation.taskUpdate(try RequestValidation.jsonObject(request))
        guard let task = try await store.update(id: id, update) else { throw APIError.taskNotFound }
        return Self.response(200, task)
    }

    func deleteTask(_ request: HTTPRequest) async throws -> HTTPResponse {
        guard try await store.delete(id: try taskID(request)) else { throw APIError.taskNotFound }
        return HTTPResponse(status: 204)
    }

    func getSettings() async throws -> HTTPResponse {
        Self.response(200, try await store.settings())
    }

    func putSettings(_ request: HTTPRequest) async throws -> HTTPResponse {
        let darkMode = try RequestValidation.darkMode(try RequestValidation.jsonObject(request))
        return Self.response(200, try await store.updateSettings(darkMode: darkMode))
    }

    private static func response(_ status: Int, _ task: TaskItem) -> HTTPResponse {
        var json = JSONWriter(capacity: 256)
        task.write(to: &json)
        json.newline()
        return .json(status, json.bytes)
    }

    private static func response(_ status: Int, _ settings: SettingsItem) -> HTTPResponse {
        var json = JSONWriter(capacity: 96)
        settings.write(to: &json)
        json.newline()
        return .json(status, json.bytes)
    }
}
