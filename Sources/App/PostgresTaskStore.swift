import Database
import Server

/// Tasks and settings in PostgreSQL, with bound parameters only. Every statement works on both
/// schema variants the original service left behind: `status` as `varchar` or as the enum
/// `taskstatus`, timestamps as `timestamptz` or as `timestamp` holding UTC (sessions run in UTC).
/// Rows are decoded into `TaskItem`/`SettingsItem` values, columns found by name.
struct PostgresTaskStore: TaskStore {
    let pool: ConnectionPool
    /// Revalidations running at once share one read of the revision.
    private let revision: CoalescedRead<Int64?>
    /// With read coalescing (`DB_COALESCE_READS`): lookups of tasks read together, the settings
    /// read once for everyone asking meanwhile, the same list read once for everyone asking
    /// meanwhile. Each caller still gets rows read after it asked.
    private let lookups: BatchedLookup<Tagged<TaskItem>>?
    private let settingsReads: CoalescedRead<Tagged<SettingsItem>>?
    private let listReads: CoalescedReads<ListKey, TaskList>?

    private struct ListKey: Hashable, Sendable {
        let query: ListQuery
        let limit: Int
    }

    /// Coalesced reads, when on: at most `maxReads` lookup statements at once (the pool's
    /// size), each for at most `maxBatch` tasks.
    struct Coalescing: Sendable {
        var maxReads: Int
        var maxBatch = 256
    }

    init(pool: ConnectionPool, coalescing: Coalescing? = nil) {
        self.pool = pool
        let revision = CoalescedRead<Int64?> {
            guard let row = try await pool.query(Statements.listRevision).first, try !row.isNull(0) else { return nil }
            return Int64(try row.int(0))
        }
        self.revision = revision
        guard let coalescing else {
            (lookups, settingsReads, listReads) = (nil, nil, nil)
            return
        }
        lookups = BatchedLookup(maxReads: coalescing.maxReads, maxBatch: coalescing.maxBatch, metrics: SharedReadMetrics(read: "task")) { ids in
            let tasks = try TaskColumns.decodeAllTagged(try await pool.query(Statements.findTasks, [.text(ids.map(String.init).joined(separator: ","))]))
            return Dictionary(tasks.map { ($0.value.id, $0) }, uniquingKeysWith: { first, _ in first })
        }
        settingsReads = CoalescedRead(metrics: SharedReadMetrics(read: "settings")) { try await Self.readSettings(pool) }
        listReads = CoalescedReads(metrics: SharedReadMetrics(read: "list")) { key in
            try await Self.readList(pool, revision, key.query, limit: key.limit)
        }
    }

    // MARK: Tasks

    /// The revision is read first, and the rows after it has been read: the rows may hold writes
    /// newer than the revision (then the tag is stale at once and the next revalidation fetches
    /// the list again), never miss one it counts, so a tag never vouches for older rows.
    func list(_ query: ListQuery, limit: Int) async throws -> TaskList {
        if let listReads { return try await listReads.value(for: ListKey(query: query, limit: limit)) }
        return try await Self.readList(pool, revision, query, limit: limit)
    }

    private static func readList(_ pool: ConnectionPool, _ revision: CoalescedRead<Int64?>, _ query: ListQuery, limit: Int) async throws -> TaskList {
        let revision = try await revision.value()
        let rows = try await pool.query(Statements.list(query), Statements.listParameters(query, limit: limit))
        return TaskList(tasks: try TaskColumns.decodeAll(rows), revision: revision)
    }

    func openList(_ query: ListQuery, batchRows: Int) async throws -> any TaskListCursor {
        try await PostgresListCursor.open(
            pool, declare: Statements.declareList(query), parameters: Statements.declareListParameters(query),
            fetch: Statements.fetchTaskList(rows: batchRows), batchRows: batchRows
        )
    }

    func listRevision() async throws -> Int64? {
        try await revision.value()
    }

    func find(id: Int) async throws -> Tagged<TaskItem>? {
        if let lookups { return try await lookups.value(for: id) }
        return try TaskColumns.decodeFirstTagged(try await pool.query(Statements.findTask, [.int(id)]))
    }

    func find(ids: [Int]) async throws -> [Tagged<TaskItem>] {
        guard !ids.isEmpty else { return [] }
        return try TaskColumns.decodeAllTagged(try await pool.query(Statements.findTasks, [.text(ids.map(String.init).joined(separator: ","))]))
    }

    func create(_ task: NewTask) async throws -> Tagged<TaskItem> {
        try await insert(task) { try await pool.query($0, $1) }
    }

    func create(
        _ task: NewTask, idempotencyKey key: String, keptFor lifetime: Duration, render: @Sendable (Tagged<TaskItem>) -> [UInt8]
    ) async throws -> IdempotentCreation {
        let request: [PostgresValue] = [.text(key), .text(task.title), .optionalText(task.description), .text(task.status.rawValue)]
        return try await pool.withTransaction { connection in
            guard let locked = try await connection.query(Statements.lockIdempotencyKey, [.text(key)]).first, try locked.bool(0) else {
                return .inProgress
            }
            if let recorded = try await connection.query(Statements.findIdempotencyKey, request).first {
                guard try recorded.bool("same_request") else { return .keyReused }
                return .replayed(RecordedAnswer(
                    status: try recorded.int("status"), taskID: try recorded.int("task_id"),
                    etag: EntityTag(checking: try recorded.string("etag")), body: Array(try recorded.string("body").utf8)
                ))
            }
            let created = try await insert(task) { try await connection.query($0, $1) }
            let body = render(created)
            _ = try await connection.query(Statements.insertIdempotencyKey, request + [
                .int(201), .int(created.value.id), .text(created.etag.opaque), .text(String(decoding: body, as: UTF8.self)),
                .int(Int(lifetime.components.seconds)),
            ])
            return .created(created, body: body)
        }
    }

    private func insert(_ task: NewTask, using query: (PreparedStatement, [PostgresValue]) async throws -> PostgresRows) async throws -> Tagged<TaskItem> {
        let rows = try await query(Statements.insertTask, [.text(task.title), .optionalText(task.description), .text(task.status.rawValue)])
        guard let task = try TaskColumns.decodeFirstTagged(rows) else { throw PostgresError(.decoding, "INSERT … RETURNING returned no row") }
        return task
    }

    func update(id: Int, _ update: TaskUpdate, if precondition: WritePrecondition) async throws -> ConditionalWrite<Tagged<TaskItem>> {
        var binds: [PostgresValue] = [.int(id)]
        switch update.title {
        case .unchanged: binds += [.bool(false), .null]
        case .set(let title): binds += [.bool(true), .text(title)]
        }
        switch update.description {
        case .unchanged: binds += [.bool(false), .null]
        case .set(let description): binds += [.bool(true), .optionalText(description)]
        }
        switch update.status {
        case .unchanged: binds += [.bool(false), .null]
        case .set(let status): binds += [.bool(true), .text(status.rawValue)]
        }
        guard !precondition.isNone else {
            return try TaskColumns.decodeFirstTagged(try await pool.query(Statements.updateTask, binds)).map { .written($0) } ?? .notFound
        }
        guard let conditions = SQLPreconditions(precondition) else { return try await failedPrecondition(taskID: id) }
        if let task = try TaskColumns.decodeFirstTagged(try await pool.query(Statements.updateTaskIfMatch, binds + conditions.binds)) {
            return .written(task)
        }
        return try await failedPrecondition(taskID: id)
    }

    func delete(id: Int, if precondition: WritePrecondition) async throws -> ConditionalWrite<Void> {
        guard !precondition.isNone else {
            return try await pool.query(Statements.deleteTask, [.int(id)]).affectedRows > 0 ? .written(()) : .notFound
        }
        guard let conditions = SQLPreconditions(precondition) else { return try await failedPrecondition(taskID: id) }
        if try await pool.query(Statements.deleteTaskIfMatch, [.int(id)] + conditions.binds).affectedRows > 0 { return .written(()) }
        return try await failedPrecondition(taskID: id)
    }

    /// After a conditional write changed nothing: 404 when the task is gone (a precondition on a
    /// missing resource is ignored, RFC 9110 §13.2.1), else the precondition failed.
    private func failedPrecondition<Value>(taskID id: Int) async throws -> ConditionalWrite<Value> {
        try await pool.query(Statements.taskExists, [.int(id)]).isEmpty ? .notFound : .preconditionFailed
    }

    // MARK: Settings

    func settings() async throws -> Tagged<SettingsItem> {
        if let settingsReads { return try await settingsReads.value() }
        return try await Self.readSettings(pool)
    }

    private static func readSettings(_ pool: ConnectionPool) async throws -> Tagged<SettingsItem> {
        if let settings = try SettingsColumns.decodeFirst(try await pool.query(Statements.selectSettings)) {
            return settings
        }
        return try await createSettingsIfMissing(pool, darkMode: false)
    }

    func updateSettings(darkMode: Bool, if precondition: WritePrecondition) async throws -> ConditionalWrite<Tagged<SettingsItem>> {
        let attempt: PostgresRows
        if precondition.isNone {
            attempt = try await pool.query(Statements.updateSettings, [.bool(darkMode)])
        } else if let conditions = SQLPreconditions(precondition) {
            attempt = try await pool.query(Statements.updateSettingsIfMatch, [.bool(darkMode)] + conditions.binds)
        } else {
            // `If-None-Match: *`: the settings always have a representation (GET creates it).
            return .preconditionFailed
        }
        if let settings = try SettingsColumns.decodeFirst(attempt) { return .written(settings) }
        if !precondition.isNone, try SettingsColumns.decodeFirst(try await pool.query(Statements.selectSettings)) != nil {
            return .preconditionFailed
        }
        // No row yet. Unconditionally: create it with the value asked for. Conditionally: create
        // it as GET would, and apply the write to it if its tag passes.
        if precondition.isNone {
            let created = try await Self.createSettingsIfMissing(pool, darkMode: darkMode)
            if created.value.darkMode == darkMode { return .written(created) }
        } else {
            let created = try await Self.createSettingsIfMissing(pool, darkMode: false)
            guard precondition.admits(created.etag) else { return .preconditionFailed }
        }
        return try await updateSettings(darkMode: darkMode, if: precondition)
    }

    /// Inserts the single row under an advisory lock, so that concurrent first requests make one.
    private static func createSettingsIfMissing(_ pool: ConnectionPool, darkMode: Bool) async throws -> Tagged<SettingsItem> {
        try await pool.withTransaction { connection in
            _ = try await connection.query(Statements.lockSettings)
            if let settings = try SettingsColumns.decodeFirst(try await connection.query(Statements.selectSettings)) {
                return settings
            }
            guard let settings = try SettingsColumns.decodeFirst(try await connection.query(Statements.insertSettings, [.bool(darkMode)])) else {
                throw PostgresError(.decoding, "INSERT … RETURNING returned no row")
            }
            return settings
        }
    }

    // MARK: Idempotency keys

    func purgeExpiredIdempotencyKeys(limit: Int) async throws -> Int {
        try await pool.query(Statements.purgeIdempotencyKeys, [.int(limit)]).affectedRows
    }

    func compactRevisionCounter() async throws -> Int {
        try await pool.query(Statements.compactRevisions).first?.int(0) ?? 0
    }
}

/// A write's preconditions as the parameters of the `…_if_match` statements: the tags `If-Match`
/// lists that can match strongly (ours are `version.microseconds`: weak ones and any with a comma
/// can never match, so they are left out) and those `If-None-Match` lists, each NULL when absent or
/// `*` on `If-Match` (the row's existence, which the statement needs anyway). Nil for
/// `If-None-Match: *`, which no existing row passes.
private struct SQLPreconditions {
    let binds: [PostgresValue]

    init?(_ precondition: WritePrecondition) {
        if precondition.ifNoneMatch == .any { return nil }
        func list(_ condition: EntityTagCondition?, strong: Bool) -> PostgresValue {
            guard case .tags(let tags) = condition else { return .null }
            return .text(tags.filter { !(strong && $0.isWeak) && !$0.opaque.contains(",") }.map(\.opaque).joined(separator: ","))
        }
        binds = [list(precondition.ifMatch, strong: true), list(precondition.ifNoneMatch, strong: false)]
    }
}

/// Where a result's task columns are, found by name once per result.
struct TaskColumns {
    let id, title, description, status, createdAt, updatedAt: Int

    init(_ rows: PostgresRows) throws {
        id = try rows.columnIndex("id")
        title = try rows.columnIndex("title")
        description = try rows.columnIndex("description")
        status = try rows.columnIndex("status")
        createdAt = try rows.columnIndex("created_at")
        updatedAt = try rows.columnIndex("updated_at")
    }

    static func decodeAll(_ rows: PostgresRows) throws -> [TaskItem] {
        guard !rows.isEmpty else { return [] }
        let columns = try TaskColumns(rows)
        var tasks: [TaskItem] = []
        tasks.reserveCapacity(rows.count)
        for index in 0..<rows.count { tasks.append(try columns.decode(rows[index])) }
        return tasks
    }

    /// Every row, each tagged with its `version` column.
    static func decodeAllTagged(_ rows: PostgresRows) throws -> [Tagged<TaskItem>] {
        guard !rows.isEmpty else { return [] }
        let columns = try TaskColumns(rows)
        return try (0..<rows.count).map { index in
            let task = try columns.decode(rows[index])
            return Tagged(value: task, etag: try rowTag(rows, rows[index], stamp: task.createdAt))
        }
    }

    /// The first row, tagged with its `version` column (see `Statements.taskETag`).
    static func decodeFirstTagged(_ rows: PostgresRows) throws -> Tagged<TaskItem>? {
        guard let row = rows.first else { return nil }
        let task = try TaskColumns(rows).decode(row)
        return Tagged(value: task, etag: try rowTag(rows, row, stamp: task.createdAt))
    }

    func decode(_ row: PostgresRow) throws -> TaskItem {
        TaskItem(
            id: try row.int(id), title: try row.requiredUTF8(title), description: try row.utf8(description),
            status: try row.requiredUTF8(status),
            createdAt: Timestamp(microsecondsSinceEpoch: try row.timestamp(createdAt).microsecondsSinceEpoch),
            updatedAt: Timestamp(microsecondsSinceEpoch: try row.timestamp(updatedAt).microsecondsSinceEpoch)
        )
    }
}

/// Where a result's settings columns are.
private enum SettingsColumns {
    static func decodeFirst(_ rows: PostgresRows) throws -> Tagged<SettingsItem>? {
        guard let row = rows.first else { return nil }
        let settings = SettingsItem(
            darkMode: try row.bool(try rows.columnIndex("dark_mode")),
            updatedAt: Timestamp(microsecondsSinceEpoch: try row.timestamp(try rows.columnIndex("updated_at")).microsecondsSinceEpoch)
        )
        return Tagged(value: settings, etag: try rowTag(rows, row, stamp: settings.updatedAt))
    }
}

/// A row's strong tag from its `version` column and a timestamp of it, as `Statements.taskETag`
/// and `Statements.settingsETag` compute it in SQL.
private func rowTag(_ rows: PostgresRows, _ row: PostgresRow, stamp: Timestamp) throws -> EntityTag {
    EntityTag("\(try row.int(try rows.columnIndex("version"))).\(stamp.microsecondsSinceEpoch)")
}
