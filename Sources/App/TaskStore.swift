/// Where tasks and the settings row live: PostgreSQL in the server (`PostgresTaskStore`), an
/// in-memory store in route tests. Errors are the store's own (`PostgresError`); the error
/// boundary turns them into answers.
protocol TaskStore: Sendable {
    func list(sortBy: TaskSortField?, descending: Bool) async throws -> [TaskItem]
    func find(id: Int) async throws -> TaskItem?
    func create(_ task: NewTask) async throws -> TaskItem
    /// Applies the fields that are set; nil when no task has this id.
    func update(id: Int, _ update: TaskUpdate) async throws -> TaskItem?
    /// True when a task was deleted.
    func delete(id: Int) async throws -> Bool
    /// The settings row, created with `dark_mode = false` when there is none.
    func settings() async throws -> SettingsItem
    func updateSettings(darkMode: Bool) async throws -> SettingsItem
}

/// The columns `GET /api/tasks` may sort by (never SQL built from input).
enum TaskSortField: String, CaseIterable, Sendable {
    case status
    case createdAt = "created_at"
    case updatedAt = "updated_at"
    case title

    /// The ORDER BY expression; `status::text` sorts the enum variant by name, as the varchar one.
    var orderExpression: String {
        switch self {
        case .status: "status::text"
        case .createdAt: "created_at"
        case .updatedAt: "updated_at"
        case .title: "title"
        }
    }
}

