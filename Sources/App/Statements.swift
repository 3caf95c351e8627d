import Database

/// The statements, prepared once per connection. Plain SELECTs are marked read-only, so reads
/// issued together share one round trip to PostgreSQL (lookups of one row also share one
/// connection); rows come back in binary format.
enum Statements {
    /// The resources statements wait on when they block: a lock on one table stalls only the
    /// statements on it (see `PreparedStatement.resource`).
    static let tasksTable = "tasks"
    static let settingsTable = "settings"
    /// The revision counter: a lock on `tasks` does not block reading it.
    static let revisionsTable = "task_management_revisions"

    static let taskColumns = "id, title, description, status::text, created_at, updated_at"
    /// What `taskColumns` must come back as (`TaskItem` reads them by position).
    static let taskShape: [ResultShape.Column] = [
        .init("id", .integer), .init("title", .text), .init("description", .text), .init("status", .text),
        .init("created_at", .timestamp), .init("updated_at", .timestamp),
    ]

    /// A task's strong entity tag: the row version's transaction id (`xmin`, new with every
    /// change to the row, whoever makes it) and `created_at` in microseconds (so that a recreated
    /// database cannot hand out a tag of the old one). Every replica derives the same tag; reads
    /// take `xmin` as a column and build the tag in `TaggedColumns`, and conditional writes
    /// compare this expression in the statement that writes. (`xmin` is what Npgsql and EF Core
    /// use as a row's concurrency token; it repeats only after 2^32 transactions.)
    static let taskETag = "(xmin::text || '.' || (extract(epoch FROM created_at) * 1000000)::bigint::text)"
    /// One task with its row version (`TaggedColumns` builds the tag).
    static let taggedTaskColumns = "\(taskColumns), xmin::text::bigint AS version"
    static let taggedTaskShape = taskShape + [.init("version", .integer)]

    /// The settings row's tag: its version and `updated_at` in microseconds.
    static let settingsETag = "(xmin::text || '.' || (extract(epoch FROM updated_at) * 1000000)::bigint::text)"
    static let taggedSettingsColumns = "dark_mode, updated_at, xmin::text::bigint AS version"
    static let settingsShape: [ResultShape.Column] = [.init("dark_mode", .boolean), .init("updated_at", .timestamp), .init("version", .integer)]

    /// `$n` holds the comma-separated tags `If-Match` lists (NULL: no condition) and `$m` those
    /// of `If-None-Match`: the row must carry one of the first and none of the second. Checked in
    /// the UPDATE or DELETE itself, so no other writer can come between the check and the write.
    static func preconditions(etag: String, ifMatch n: Int, ifNoneMatch m: Int) -> String {
        "($\(n)::text IS NULL OR \(etag) = ANY(string_to_array($\(n)::text, ','))) AND ($\(m)::text IS NULL OR \(etag) <> ALL(string_to_array($\(m)::text, ',')))"
    }

    static let findTask = PreparedStatement(
        name: "find_task", sql: "SELECT \(taggedTaskColumns) FROM tasks WHERE id = $1", readOnly: true, binaryResults: true, atMostOneRow: true,
        resource: tasksTable, returns: .select(taggedTaskShape)
    )

    /// The tasks whose ids `$1` lists, comma-separated (lookups read together, the event feed).
    static let findTasks = PreparedStatement(
        name: "find_tasks", sql: "SELECT \(taggedTaskColumns) FROM tasks WHERE id = ANY(string_to_array($1::text, ',')::bigint[])",
        readOnly: true, binaryResults: true, resource: tasksTable, returns: .select(taggedTaskShape)
    )

    /// Whether a task exists (to tell 404 from 412 after a conditional write changed nothing).
    static let taskExists = PreparedStatement(
        name: "task_exists", sql: "SELECT 1 AS found FROM tasks WHERE id = $1", readOnly: true, atMostOneRow: true,
        resource: tasksTable, returns: .select([.init("found", .integer)])
    )

    /// The list's revision: the sum of the counter's rows; NULL when the base row is missing or
    /// the trigger that bumps them is gone or disabled (then no tag is given rather than one that
    /// might not change).
    static let tasksRevision = """
        SELECT CASE WHEN count(*) FILTER (WHERE slot = \(RevisionCounter.baseSlot)) = 1 AND \(Schema.revisionTriggerEnabled) \
        THEN sum(revision)::bigint END AS revision FROM task_management_revisions WHERE resource = 'tasks'
        """

    /// Folds the rows of backends that no longer exist into the base row, in one statement, so
    /// that the sum (the revision) is the same before and after; how many rows it folded.
    static let compactRevisions = PreparedStatement(
        name: "compact_revisions",
        sql: """
            WITH gone AS (
                DELETE FROM task_management_revisions
                WHERE resource = 'tasks' AND slot <> \(RevisionCounter.baseSlot)
                  AND slot NOT IN (SELECT pid FROM pg_stat_activity WHERE pid IS NOT NULL)
                RETURNING revision
            )
            UPDATE task_management_revisions SET revision = revision + (SELECT coalesce(sum(revision), 0) FROM gone)::bigint
            WHERE resource = 'tasks' AND slot = \(RevisionCounter.baseSlot)
            RETURNING (SELECT count(*) FROM gone) AS folded
            """,
        resource: tasksTable, returns: .rows("UPDATE", [.init("folded", .integer)])
    )

    static let listRevision = PreparedStatement(
        name: "list_revision", sql: tasksRevision, readOnly: true, binaryResults: true, atMostOneRow: true,
        resource: revisionsTable, returns: .select([.init("revision", .integer)])
    )

    static let insertTask = PreparedStatement(
        name: "insert_task",
        sql: """
            INSERT INTO tasks (title, description, status, created_at, updated_at)
            VALUES ($1, $2, $3, now(), now()) RETURNING \(taggedTaskColumns)
            """,
        binaryResults: true, resource: tasksTable, returns: .rows("INSERT", taggedTaskShape)
    )

    /// A partial update: `$2`, `$4`, `$6` say whether title (`$3`), description (`$5`) and
    /// status (`$7`) change.
    private static let updateTaskSet = """
        UPDATE tasks SET
            title = CASE WHEN $2 THEN $3 ELSE title END,
            description = CASE WHEN $4 THEN $5 ELSE description END,
            status = CASE WHEN $6 THEN $7 ELSE status END,
            updated_at = now()
        """

    static let updateTask = PreparedStatement(
        name: "update_task",
        sql: "\(updateTaskSet) WHERE id = $1 RETURNING \(taggedTaskColumns)",
        binaryResults: true, atMostOneRow: true, resource: tasksTable, returns: .rows("UPDATE", taggedTaskShape)
    )

    /// `updateTask` when the row still carries a tag `$8` lists (or none `$9` lists).
    static let updateTaskIfMatch = PreparedStatement(
        name: "update_task_if_match",
        sql: "\(updateTaskSet) WHERE id = $1 AND \(preconditions(etag: taskETag, ifMatch: 8, ifNoneMatch: 9)) RETURNING \(taggedTaskColumns)",
        binaryResults: true, atMostOneRow: true, resource: tasksTable, returns: .rows("UPDATE", taggedTaskShape)
    )

    static let deleteTask = PreparedStatement(name: "delete_task", sql: "DELETE FROM tasks WHERE id = $1", resource: tasksTable, returns: .command("DELETE"))

    static let deleteTaskIfMatch = PreparedStatement(
        name: "delete_task_if_match",
        sql: "DELETE FROM tasks WHERE id = $1 AND \(preconditions(etag: taskETag, ifMatch: 2, ifNoneMatch: 3))",
        resource: tasksTable, returns: .command("DELETE")
    )

    /// Per order (`id`, or `<field> ASC|DESC`) and filter (with `_status`: `$3` is the status):
    /// the list, `$1` rows at most after skipping `$2`.
    private static let lists: [String: PreparedStatement] = listStatements { name, select, order, filter in
        PreparedStatement(
            name: name, sql: "\(select)\(filter.map { " WHERE \($0) = $3" } ?? "") \(order) LIMIT $1 OFFSET $2", readOnly: true,
            binaryResults: true, resource: tasksTable, returns: .select(taskShape)
        )
    }

    /// The same lists whole as the cursor `task_list` (`$1` rows skipped; filtered by `$2`), read
    /// in batches by `fetchTaskList` inside one transaction (one snapshot, however long the list).
    private static let listCursors: [String: PreparedStatement] = listStatements { name, select, order, filter in
        PreparedStatement(
            name: "declare_\(name)",
            sql: "DECLARE task_list NO SCROLL CURSOR FOR \(select)\(filter.map { " WHERE \($0) = $2" } ?? "") \(order) OFFSET $1",
            resource: tasksTable, returns: .command("DECLARE")
        )
    }

    /// Per key (`key(_:)`): what `make` builds of the statement's name, its SELECT, its ORDER BY
    /// and the filtered column (nil: unfiltered).
    private static func listStatements(_ make: (String, String, String, String?) -> PreparedStatement) -> [String: PreparedStatement] {
        var orders: [(key: String, name: String, order: String)] = [("id", "list_tasks", "ORDER BY id")]
        for field in TaskSortField.allCases {
            for descending in [false, true] {
                let direction = descending ? "DESC" : "ASC"
                orders.append((
                    "\(field.rawValue) \(direction)", "list_tasks_\(field.rawValue)_\(direction.lowercased())",
                    "ORDER BY \(field.orderExpression) \(direction), id ASC"
                ))
            }
        }
        var statements: [String: PreparedStatement] = [:]
        for order in orders {
            let select = "SELECT \(taskColumns) FROM tasks"
            statements[order.key] = make(order.name, select, order.order, nil)
            statements[order.key + " status"] = make(order.name + "_status", select, order.order, "status::text")
        }
        return statements
    }

    private static func key(_ query: ListQuery) -> String {
        (query.sortBy.map { "\($0.rawValue) \(query.descending ? "DESC" : "ASC")" } ?? "id") + (query.status == nil ? "" : " status")
    }

    /// The list statement for `query`; its parameters come from `listParameters`.
    static func list(_ query: ListQuery) -> PreparedStatement {
        lists[key(query)]!
    }

    static func listParameters(_ query: ListQuery, limit: Int) -> [PostgresValue] {
        [.int(limit), .int(query.offset)] + (query.status.map { [.text($0.rawValue)] } ?? [])
    }

    static func declareList(_ query: ListQuery) -> PreparedStatement {
        listCursors[key(query)]!
    }

    static func declareListParameters(_ query: ListQuery) -> [PostgresValue] {
        [.int(query.offset)] + (query.status.map { [.text($0.rawValue)] } ?? [])
    }

    /// The next `rows` rows of the cursor `declareList` opened (the count is the server's
    /// setting, never a client's).
    static func fetchTaskList(rows: Int) -> PreparedStatement {
        PreparedStatement(
            name: "fetch_task_list_\(rows)", sql: "FETCH FORWARD \(rows) FROM task_list", binaryResults: true, resource: tasksTable,
            returns: .rows("FETCH", taskShape)
        )
    }

    static let selectSettings = PreparedStatement(
        name: "select_settings", sql: "SELECT \(taggedSettingsColumns) FROM settings ORDER BY id LIMIT 1", readOnly: true,
        binaryResults: true, atMostOneRow: true, resource: settingsTable, returns: .select(settingsShape)
    )

    static let updateSettings = PreparedStatement(
        name: "update_settings",
        sql: """
            UPDATE settings SET dark_mode = $1, updated_at = now()
            WHERE id = (SELECT id FROM settings ORDER BY id LIMIT 1) RETURNING \(taggedSettingsColumns)
            """,
        binaryResults: true, atMostOneRow: true, resource: settingsTable, returns: .rows("UPDATE", settingsShape)
    )

    static let updateSettingsIfMatch = PreparedStatement(
        name: "update_settings_if_match",
        sql: """
            UPDATE settings SET dark_mode = $1, updated_at = now()
            WHERE id = (SELECT id FROM settings ORDER BY id LIMIT 1) AND \(preconditions(etag: settingsETag, ifMatch: 2, ifNoneMatch: 3))
            RETURNING \(taggedSettingsColumns)
            """,
        binaryResults: true, atMostOneRow: true, resource: settingsTable, returns: .rows("UPDATE", settingsShape)
    )

    static let insertSettings = PreparedStatement(
        name: "insert_settings",
        sql: "INSERT INTO settings (dark_mode, updated_at) VALUES ($1, now()) RETURNING \(taggedSettingsColumns)",
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

    // MARK: Idempotency keys

    /// The canonical form of a create request, for telling a retry from another request.
    private static let requestFingerprint = "md5(ROW($2::text, $3::text, $4::text)::text)"

    /// Taken (without waiting) by the transaction that handles a key; a second request with the
    /// same key that finds it taken is still in flight elsewhere. Keys share 2^32 lock numbers,
    /// so two keys may rarely contend: the loser is told to retry, which is always safe.
    static let lockIdempotencyKey = PreparedStatement(
        name: "lock_idempotency_key", sql: "SELECT pg_try_advisory_xact_lock(\(AdvisoryLock.idempotencyKeys), hashtext($1)) AS locked",
        atMostOneRow: true, returns: .select([.init("locked", .boolean)])
    )

    /// The answer stored for a key ($1) that has not expired, and whether it was for the same
    /// request ($2–$4: title, description, status).
    static let findIdempotencyKey = PreparedStatement(
        name: "find_idempotency_key",
        sql: """
            SELECT fingerprint = \(requestFingerprint) AS same_request, status, task_id, etag, body
            FROM task_management_idempotency_keys WHERE key = $1 AND expires_at > now()
            """,
        atMostOneRow: true, resource: idempotencyTable,
        returns: .select([.init("same_request", .boolean), .init("status", .integer), .init("task_id", .integer), .init("etag", .text), .init("body", .text)])
    )

    /// Records a key's answer ($5 status, $6 task id, $7 tag, $8 body) for $9 seconds, replacing an
    /// expired record of the same key.
    static let insertIdempotencyKey = PreparedStatement(
        name: "insert_idempotency_key",
        sql: """
            INSERT INTO task_management_idempotency_keys (key, fingerprint, status, task_id, etag, body, expires_at)
            VALUES ($1, \(requestFingerprint), $5, $6, $7, $8, now() + make_interval(secs => $9::double precision))
            ON CONFLICT (key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, status = EXCLUDED.status, task_id = EXCLUDED.task_id,
                etag = EXCLUDED.etag, body = EXCLUDED.body, created_at = now(), expires_at = EXCLUDED.expires_at
            """,
        resource: idempotencyTable, returns: .command("INSERT")
    )

    /// Deletes up to $1 expired keys, skipping rows another replica is deleting.
    static let purgeIdempotencyKeys = PreparedStatement(
        name: "purge_idempotency_keys",
        sql: """
            DELETE FROM task_management_idempotency_keys WHERE key IN (
                SELECT key FROM task_management_idempotency_keys WHERE expires_at <= now() LIMIT $1 FOR UPDATE SKIP LOCKED
            )
            """,
        resource: idempotencyTable, returns: .command("DELETE")
    )

    static let idempotencyTable = "task_management_idempotency_keys"

    /// Every statement above (the tests check that each declares its result's shape).
    static var all: [PreparedStatement] {
        [
            findTask, findTasks, taskExists, listRevision, insertTask, updateTask, updateTaskIfMatch, deleteTask, deleteTaskIfMatch,
            selectSettings, updateSettings, updateSettingsIfMatch, insertSettings, readinessProbe, lockSettings,
            lockIdempotencyKey, findIdempotencyKey, insertIdempotencyKey, purgeIdempotencyKeys, compactRevisions,
        ] + lists.values.sorted { $0.name < $1.name } + listCursors.values.sorted { $0.name < $1.name }
    }
}


/// Keys of the transaction-scoped advisory locks this server takes (one number space per
/// database, shared with anything else that uses advisory locks there).
enum AdvisoryLock {
    /// Held while the tables are created, so that pods starting together do not collide.
    static let schema: Int64 = 7_245_837_000
    /// Held while the settings row is created, so that concurrent first requests make one.
    static let settings: Int64 = 7_245_837_001
    /// The first key of the two-key locks on idempotency keys (a number space apart from the
    /// one-key locks above).
    static let idempotencyKeys: Int32 = 72_458_370
}
