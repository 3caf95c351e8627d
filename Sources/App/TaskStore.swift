import EventLoopCore
import Server

/// Where tasks and the settings row live: PostgreSQL in the server (`PostgresTaskStore`), an
/// in-memory store in route tests. Errors are the store's own (`PostgresError`); the error
/// boundary turns them into answers. Single tasks and the settings come with their entity tag;
/// the list with the revision it was read at. Writes take the request's preconditions and check
/// them in the same step as the write.
protocol TaskStore: Sendable {
    /// The first `limit` tasks at most of the list `query` describes, and the revision it was read at.
    func list(_ query: ListQuery, limit: Int) async throws -> TaskList
    /// The whole list from one snapshot, ready to be read `batchRows` tasks at a time (its
    /// database work has begun when this returns, so a failure to start is thrown here).
    func openList(_ query: ListQuery, batchRows: Int) async throws -> any TaskListCursor
    /// The list's current revision (nil when it cannot be told), without reading the list.
    func listRevision() async throws -> Int64?
    func find(id: Int) async throws -> Tagged<TaskItem>?
    /// Those of `ids` that exist, in no particular order (the event feed reads the rows of many
    /// changes in one statement).
    func find(ids: [Int]) async throws -> [Tagged<TaskItem>]
    func create(_ task: NewTask) async throws -> Tagged<TaskItem>
    /// Creates the task and records `key` with the answer `render` makes of it, in one
    /// transaction; or finds the answer already recorded for the key.
    func create(_ task: NewTask, idempotencyKey key: String, keptFor lifetime: Duration, render: @Sendable (Tagged<TaskItem>) -> [UInt8]) async throws -> IdempotentCreation
    /// Applies the fields that are set.
    func update(id: Int, _ update: TaskUpdate, if precondition: WritePrecondition) async throws -> ConditionalWrite<Tagged<TaskItem>>
    func delete(id: Int, if precondition: WritePrecondition) async throws -> ConditionalWrite<Void>
    /// The settings row, created with `dark_mode = false` when there is none.
    func settings() async throws -> Tagged<SettingsItem>
    func updateSettings(darkMode: Bool, if precondition: WritePrecondition) async throws -> ConditionalWrite<Tagged<SettingsItem>>
    /// Deletes up to `limit` expired idempotency keys; how many it deleted.
    func purgeExpiredIdempotencyKeys(limit: Int) async throws -> Int
    /// Folds the revision counter's rows of backends that have gone into one; how many it folded.
    func compactRevisionCounter() async throws -> Int
}

/// The list being read in batches: each `next` reads the next batch (nil after the last). It
/// holds what it reads from (a database connection) until the last batch or until it is
/// dropped, whichever comes first.
protocol TaskListCursor: Sendable {
    func next() async throws -> [TaskItem]?
}

/// A value with the entity tag of its representation.
struct Tagged<Value: Sendable>: Sendable {
    var value: Value
    var etag: EntityTag
}

/// The task list, and the revision it was read at (nil when the revision cannot be told).
struct TaskList: Sendable {
    let tasks: [TaskItem]
    let revision: Int64?
    /// The JSON of its first tasks, made once for every request that shares this list (a read
    /// shared by many requests is answered with one rendering, not one each).
    private let rendered = LockedValue<(count: Int, body: [UInt8])?>(nil)

    init(tasks: [TaskItem], revision: Int64?) {
        self.tasks = tasks
        self.revision = revision
    }

    /// The answer body of the first `count` tasks: `render` makes it, the first time.
    func body(ofFirst count: Int, _ render: (ArraySlice<TaskItem>) -> [UInt8]) -> [UInt8] {
        if let cached = rendered.withLock({ $0 }), cached.count == count { return cached.body }
        let body = render(tasks.prefix(count))
        rendered.withLock { if $0 == nil { $0 = (count, body) } }
        return body
    }
}

/// The preconditions of a write, from `If-Match` and `If-None-Match` (RFC 9110 §13.1.1–2).
struct WritePrecondition: Sendable, Equatable {
    var ifMatch: EntityTagCondition?
    var ifNoneMatch: EntityTagCondition?

    static let none = WritePrecondition()

    var isNone: Bool { ifMatch == nil && ifNoneMatch == nil }

    /// Whether a resource whose current tag is `current` passes: `If-Match` compares strongly,
    /// `If-None-Match` weakly (the same rules the SQL statements apply).
    func admits(_ current: EntityTag) -> Bool {
        if let ifMatch, !ifMatch.matches(current, weakly: false) { return false }
        if let ifNoneMatch, ifNoneMatch.matches(current, weakly: true) { return false }
        return true
    }
}

/// How a conditional write ended.
enum ConditionalWrite<Value: Sendable>: Sendable {
    case written(Value)
    case notFound
    case preconditionFailed
}

/// How a create with an idempotency key ended.
enum IdempotentCreation: Sendable {
    /// The first request with this key: the task and the answer recorded for it.
    case created(Tagged<TaskItem>, body: [UInt8])
    /// A retry of a request already answered: that answer.
    case replayed(RecordedAnswer)
    /// Another request with this key is being handled now.
    case inProgress
    /// The key was used before for a different request.
    case keyReused
}

/// The answer recorded with an idempotency key.
struct RecordedAnswer: Sendable, Equatable {
    var status: Int
    var taskID: Int
    /// Nil when what was read back is not a tag (a row changed by hand): the answer goes without one.
    var etag: EntityTag?
    var body: [UInt8]
}

/// Which tasks a list holds and in which order: `sort_by` and `sort_order` as the original
/// reads them, and the opt-in `status` filter and `offset` (rows skipped).
struct ListQuery: Sendable, Hashable {
    var sortBy: TaskSortField?
    var descending = false
    var status: TaskStatus?
    var offset = 0
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

