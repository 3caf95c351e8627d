import Database

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

    /// Serialises the creation of the settings row.
    static let lockSettings = PreparedStatement(
        name: "lock_settings", sql: "SELECT pg_advisory_xact_lock(\(AdvisoryLock.settings))",
        returns: .select([.init("pg_advisory_xact_lock", .void)])
    )

    /// Every statement above (the tests check that each declares its result's shape).
    static var all: [PreparedStatement] {
        [findTask, insertTask, updateTask, deleteTask, selectSettings, updateSettings, insertSettings, readinessProbe, lockSettings]
            + lists.values.sorted { $0.name < $1.name }
    }
}


/// Keys of the transaction-scoped advisory locks this server takes (one number space per
/// database, shared with anything else that uses advisory locks there).
enum AdvisoryLock {
    /// Held while the tables are created, so that pods starting together do not collide.
    static let schema: Int64 = 7_245_837_000
    /// Held while the settings row is created, so that concurrent first requests make one.
    static let settings: Int64 = 7_245_837_001
}
