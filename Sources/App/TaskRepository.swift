import Database

/// The SQL for tasks and settings, with bound parameters only. Every statement works on both
/// schema variants the original service left behind: `status` as `varchar` or as the enum
/// `taskstatus`, timestamps as `timestamptz` or as `timestamp` holding UTC (sessions run in UTC).
struct TaskRepository: Sendable {
    let pool: ConnectionPool

    // MARK: Tasks

    func list(sortBy: TaskSortField?, descending: Bool) async throws -> [TaskItem] {
        let statement = Statements.list(sortBy: sortBy, descending: descending)
        let rows = try await pool.query(statement)
        return rows.rows.map(TaskItem.init(row:))
    }

    func find(id: Int) async throws -> TaskItem? {
        let rows = try await pool.query(Statements.findTask, [.int(id)])
        return rows.first.map(TaskItem.init(row:))
    }

    func create(_ task: NewTask) async throws -> TaskItem {
        let rows = try await pool.query(
            Statements.insertTask, [.text(task.title), .optionalText(task.description), .text(task.status.rawValue)]
        )
        guard let row = rows.first else { throw PostgresError(.decoding, "INSERT … RETURNING returned no row") }
        return TaskItem(row: row)
    }

    /// Applies the fields that are set; nil when no task has this id.
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
        let rows = try await pool.query(Statements.updateTask, binds)
        return rows.first.map(TaskItem.init(row:))
    }

    /// True when a task was deleted.
    func delete(id: Int) async throws -> Bool {
        let rows = try await pool.query(Statements.deleteTask, [.int(id)])
        return rows.affectedRows > 0
    }

    // MARK: Settings

    /// The settings row, created with `dark_mode = false` when there is none.
    func settings() async throws -> SettingsItem {
        if let row = try await pool.query(Statements.selectSettings).first {
            return try SettingsItem(row: row)
        }
        return try await createSettingsIfMissing(darkMode: false)
    }

    func updateSettings(darkMode: Bool) async throws -> SettingsItem {
        if let row = try await pool.query(Statements.updateSettings, [.bool(darkMode)]).first {
            return try SettingsItem(row: row)
        }
        let created = try await createSettingsIfMissing(darkMode: darkMode)
        guard created.darkMode != darkMode else { return created }
        return try await updateSettings(darkMode: darkMode)
    }

    /// Inserts the single row under an advisory lock, so that concurrent first requests make one.
    private func createSettingsIfMissing(darkMode: Bool) async throws -> SettingsItem {
        try await pool.withTransaction { connection in
            _ = try await connection.query(Statements.lockSettings)
            if let row = try await connection.query(Statements.selectSettings).first {
                return try SettingsItem(row: row)
            }
            guard let row = try await connection.query(Statements.insertSettings, [.bool(darkMode)]).first else {
                throw PostgresError(.decoding, "INSERT … RETURNING returned no row")
            }
            return try SettingsItem(row: row)
        }
    }
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

/// The statements, prepared once per connection. Plain SELECTs are marked read-only, so reads
/// issued together share one round trip to PostgreSQL (lookups of one row also share one
/// connection); rows come back in binary format.
enum Statements {
    /// The resources statements wait on when they block: a lock on one table stalls only the
    /// statements on it (see `PreparedStatement.resource`).
    static let tasksTable = "tasks"
    static let settingsTable = "settings"

    static let taskColumns = "id, title, description, status::text, created_at, updated_at"
    /// What `taskColumns` must come back as (`TaskItem` reads them by position).
    static let taskShape: [ResultShape.Column] = [
        .init("id", .integer), .init("title", .text), .init("description", .text), .init("status", .text),
        .init("created_at", .timestamp), .init("updated_at", .timestamp),
    ]
    static let settingsShape: [ResultShape.Column] = [.init("dark_mode", .boolean), .init("updated_at", .timestamp)]

    static let findTask = PreparedStatement(
        name: "find_task", sql: "SELECT \(taskColumns) FROM tasks WHERE id = $1", readOnly: true, binaryResults: true, atMostOneRow: true,
        resource: tasksTable, returns: .select(taskShape)
    )

    static let insertTask = PreparedStatement(
        name: "insert_task",
        sql: """
            INSERT INTO tasks (title, description, status, created_at, updated_at)
            VALUES ($1, $2, $3, now(), now()) RETURNING \(taskColumns)
            """,
        binaryResults: true, resource: tasksTable, returns: .rows("INSERT", taskShape)
    )

    static let updateTask = PreparedStatement(
        name: "update_task",
        sql: """
            UPDATE tasks SET
                title = CASE WHEN $2 THEN $3 ELSE title END,
                description = CASE WHEN $4 THEN $5 ELSE description END,
                status = CASE WHEN $6 THEN $7 ELSE status END,
                updated_at = now()
            WHERE id = $1 RETURNING \(taskColumns)
            """,
        binaryResults: true, atMostOneRow: true, resource: tasksTable, returns: .rows("UPDATE", taskShape)
    )

    static let deleteTask = PreparedStatement(name: "delete_task", sql: "DELETE FROM tasks WHERE id = $1", resource: tasksTable, returns: .command("DELETE"))

    private static let lists: [String: PreparedStatement] = {
        var statements: [String: PreparedStatement] = [:]
        statements["id"] = PreparedStatement(
            name: "list_tasks", sql: "SELECT \(taskColumns) FROM tasks ORDER BY id", readOnly: true, binaryResults: true,
            resource: tasksTable, returns: .select(taskShape)
        )
        for field in TaskSortField.allCases {
            for descending in [false, true] {
                let direction = descending ? "DESC" : "ASC"
                statements["\(field.rawValue) \(direction)"] = PreparedStatement(
                    name: "list_tasks_\(field.rawValue)_\(direction.lowercased())",
                    sql: "SELECT \(taskColumns) FROM tasks ORDER BY \(field.orderExpression) \(direction), id ASC",
                    readOnly: true, binaryResults: true, resource: tasksTable, returns: .select(taskShape)
                )
            }
        }
        return statements
    }()

    static func list(sortBy: TaskSortField?, descending: Bool) -> PreparedStatement {
        guard let sortBy else { return lists["id"]! }
        return lists["\(sortBy.rawValue) \(descending ? "DESC" : "ASC")"]!
    }

    static let selectSettings = PreparedStatement(
        name: "select_settings", sql: "SELECT dark_mode, updated_at FROM settings ORDER BY id LIMIT 1", readOnly: true,
        binaryResults: true, atMostOneRow: true, resource: settingsTable, returns: .select(settingsShape)
    )

    static let updateSettings = PreparedStatement(
        name: "update_settings",
        sql: """
            UPDATE settings SET dark_mode = $1, updated_at = now()
            WHERE id = (SELECT id FROM settings ORDER BY id LIMIT 1) RETURNING dark_mode, updated_at
            """,
        binaryResults: true, atMostOneRow: true, resource: settingsTable, returns: .rows("UPDATE", settingsShape)
    )

    static let insertSettings = PreparedStatement(
        name: "insert_settings",
        sql: "INSERT INTO settings (dark_mode, updated_at) VALUES ($1, now()) RETURNING dark_mode, updated_at",
        binaryResults: true, atMostOneRow: true, resource: settingsTable, returns: .rows("INSERT", settingsShape)
    )

    /// The readiness probe: the cheapest statement that needs the tasks table to answer.
    static let readinessProbe = PreparedStatement(
        name: "readiness_probe", sql: "SELECT 1 FROM tasks LIMIT 1", readOnly: true, atMostOneRow: true, resource: tasksTable,
        returns: .select([.init("?column?", .integer)])
    )

    /// Serialises the creation of the settings row (key: "settings" as a number).
    static let lockSettings = PreparedStatement(
        name: "lock_settings", sql: "SELECT pg_advisory_xact_lock(7245837001)",
        returns: .select([.init("pg_advisory_xact_lock", .void)])
    )

    /// Every statement above (the tests check that each declares its result's shape).
    static var all: [PreparedStatement] {
        [findTask, insertTask, updateTask, deleteTask, selectSettings, updateSettings, insertSettings, readinessProbe, lockSettings]
            + lists.values.sorted { $0.name < $1.name }
    }
}

/// Creates the tables when missing, as the original's migrations define them; never alters or
/// drops anything. Runs under an advisory lock so that pods starting together do not collide.
enum Schema {
    static let bootstrapStatements = [
        "SELECT pg_advisory_xact_lock(7245837000)",
        """
        CREATE TABLE IF NOT EXISTS tasks (
            id          serial PRIMARY KEY,
            title       varchar(200) NOT NULL,
            description text,
            status      varchar(50)  NOT NULL DEFAULT 'TODO',
            created_at  timestamptz  NOT NULL DEFAULT now(),
            updated_at  timestamptz  NOT NULL DEFAULT now()
        )
        """,
        """
        CREATE TABLE IF NOT EXISTS settings (
            id         serial PRIMARY KEY,
            dark_mode  boolean     NOT NULL DEFAULT false,
            updated_at timestamptz NOT NULL DEFAULT now()
        )
        """,
    ]

    static func bootstrap(_ pool: ConnectionPool) async throws {
        try await pool.withTransaction { connection in
            for statement in bootstrapStatements { _ = try await connection.simpleQuery(statement) }
        }
    }
}
