import Database

/// Tasks and settings in PostgreSQL, with bound parameters only. Every statement works on both
/// schema variants the original service left behind: `status` as `varchar` or as the enum
/// `taskstatus`, timestamps as `timestamptz` or as `timestamp` holding UTC (sessions run in UTC).
/// Rows are decoded into `TaskItem`/`SettingsItem` values, columns found by name.
struct PostgresTaskStore: TaskStore {
    let pool: ConnectionPool

    // MARK: Tasks

    func list(sortBy: TaskSortField?, descending: Bool) async throws -> [TaskItem] {
        try TaskColumns.decodeAll(try await pool.query(Statements.list(sortBy: sortBy, descending: descending)))
    }

    func find(id: Int) async throws -> TaskItem? {
        try TaskColumns.decodeFirst(try await pool.query(Statements.findTask, [.int(id)]))
    }

    func create(_ task: NewTask) async throws -> TaskItem {
        let rows = try await pool.query(
            Statements.insertTask, [.text(task.title), .optionalText(task.description), .text(task.status.rawValue)]
        )
        guard let task = try TaskColumns.decodeFirst(rows) else { throw PostgresError(.decoding, "INSERT … RETURNING returned no row") }
        return task
    }

    func update(id: Int, _ update: TaskUpdate) async throws -> TaskItem? {
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
        return try TaskColumns.decodeFirst(try await pool.query(Statements.updateTask, binds))
    }

    func delete(id: Int) async throws -> Bool {
        try await pool.query(Statements.deleteTask, [.int(id)]).affectedRows > 0
    }

    // MARK: Settings

    func settings() async throws -> SettingsItem {
        if let settings = try SettingsColumns.decodeFirst(try await pool.query(Statements.selectSettings)) {
            return settings
        }
        return try await createSettingsIfMissing(darkMode: false)
    }

    func updateSettings(darkMode: Bool) async throws -> SettingsItem {
        if let settings = try SettingsColumns.decodeFirst(try await pool.query(Statements.updateSettings, [.bool(darkMode)])) {
            return settings
        }
        let created = try await createSettingsIfMissing(darkMode: darkMode)
        guard created.darkMode != darkMode else { return created }
        return try await updateSettings(darkMode: darkMode)
    }

    /// Inserts the single row under an advisory lock, so that concurrent first requests make one.
    private func createSettingsIfMissing(darkMode: Bool) async throws -> SettingsItem {
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
}

/// Where a result's task columns are, found by name once per result.
private struct TaskColumns {
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

    static func decodeFirst(_ rows: PostgresRows) throws -> TaskItem? {
        guard let row = rows.first else { return nil }
        return try TaskColumns(rows).decode(row)
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
    static func decodeFirst(_ rows: PostgresRows) throws -> SettingsItem? {
        guard let row = rows.first else { return nil }
        return SettingsItem(
            darkMode: try row.bool(try rows.columnIndex("dark_mode")),
            updatedAt: Timestamp(microsecondsSinceEpoch: try row.timestamp(try rows.columnIndex("updated_at")).microsecondsSinceEpoch)
        )
    }
}
