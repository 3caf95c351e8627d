import Database

/// Creates the tables when missing, as the original's migrations define them; never alters or
/// drops anything. Runs under an advisory lock so that pods starting together do not collide.
///
/// Besides the original's two tables it adds, once, what conditional requests and retries need:
/// `task_management_revisions` (a counter every write to `tasks` bumps, from any client: a
/// statement-level trigger; see `RevisionCounter`) and `task_management_idempotency_keys`. The trigger is the one
/// thing attached to an original table; it changes no row of it and needs no privilege from the
/// writer (it runs as its owner).
enum Schema {
    static let bootstrapStatements = [
        "SELECT pg_advisory_xact_lock(\(AdvisoryLock.schema))",
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

    /// The revision counter's table, its rows, the trigger function and the trigger (created
    /// only when missing, so a server without the right to replace them still starts).
    static let revisionStatements = [
        """
        CREATE TABLE IF NOT EXISTS task_management_revisions (
            resource text    NOT NULL,
            slot     integer NOT NULL,
            revision bigint  NOT NULL,
            PRIMARY KEY (resource, slot)
        )
        """,
        """
        INSERT INTO task_management_revisions (resource, slot, revision)
        VALUES ('tasks', \(RevisionCounter.baseSlot), \(RevisionCounter.clockMicroseconds)) ON CONFLICT DO NOTHING
        """,
        """
        DO $do$
        BEGIN
            \(triggerFunctionIfMissing("task_management_bump_revision", body: """
                INSERT INTO task_management_revisions AS r (resource, slot, revision) VALUES (TG_TABLE_NAME, pg_backend_pid(), 1)
                    ON CONFLICT (resource, slot) DO UPDATE SET revision = r.revision + 1;
                """))
            BEGIN
                \(triggerIfMissing("task_management_revision", on: "tasks", "AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE", forEach: "STATEMENT", calling: "task_management_bump_revision"))
            EXCEPTION WHEN insufficient_privilege THEN
                NULL;  -- a role that may not add triggers to tasks: the list goes without a tag
            END;
        END
        $do$
        """,
    ]

    /// The change feed (`GET /api/events`): row triggers on `tasks` and `settings` that NOTIFY
    /// `EventFeed.channel` with what changed (`task.created 12`, `task.updated 12`,
    /// `task.deleted 12`, `tasks.truncated`, `settings.updated 1`). A NOTIFY is delivered only
    /// when its transaction commits, whoever wrote (any replica, psql, the Flask service), and
    /// carries ids only, far below PostgreSQL's 8000-byte payload limit. Created when missing.
    static let eventStatements = [
        """
        DO $do$
        BEGIN
            \(triggerFunctionIfMissing("task_management_notify_change", body: """
                IF TG_LEVEL = 'STATEMENT' THEN
                    PERFORM pg_notify('\(EventFeed.channel)', 'tasks.truncated');
                ELSIF TG_TABLE_NAME = 'settings' THEN
                    PERFORM pg_notify('\(EventFeed.channel)', 'settings.updated ' || NEW.id);
                ELSIF TG_OP = 'INSERT' THEN
                    PERFORM pg_notify('\(EventFeed.channel)', 'task.created ' || NEW.id);
                ELSIF TG_OP = 'UPDATE' THEN
                    PERFORM pg_notify('\(EventFeed.channel)', 'task.updated ' || NEW.id);
                ELSE
                    PERFORM pg_notify('\(EventFeed.channel)', 'task.deleted ' || OLD.id);
                END IF;
                """))
            BEGIN
                \(triggerIfMissing("task_management_events", on: "tasks", "AFTER INSERT OR UPDATE OR DELETE", forEach: "ROW", calling: "task_management_notify_change"))
                \(triggerIfMissing("task_management_events_truncate", on: "tasks", "AFTER TRUNCATE", forEach: "STATEMENT", calling: "task_management_notify_change"))
                \(triggerIfMissing("task_management_events", on: "settings", "AFTER INSERT OR UPDATE", forEach: "ROW", calling: "task_management_notify_change"))
            EXCEPTION WHEN insufficient_privilege THEN
                NULL;  -- a role that may not add triggers: the feed carries nothing but heartbeats
            END;
        END
        $do$
        """,
    ]

    /// PL/pgSQL creating the trigger function `name()` running `body` (then `RETURN NULL`), when
    /// there is none of that name (a server without the right to replace it still starts).
    private static func triggerFunctionIfMissing(_ name: String, body: String) -> String {
        """
        IF to_regprocedure('\(name)()') IS NULL THEN
            CREATE FUNCTION \(name)() RETURNS trigger
            LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $fn$
            BEGIN
            \(body)
                RETURN NULL;
            END
            $fn$;
        END IF;
        """
    }

    /// PL/pgSQL creating the trigger `name` on `table` (`timing`, for each `level`, calling
    /// `function()`), when the table has none of that name.
    private static func triggerIfMissing(_ name: String, on table: String, _ timing: String, forEach level: String, calling function: String) -> String {
        """
        IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = '\(table)'::regclass AND tgname = '\(name)') THEN
            CREATE TRIGGER \(name) \(timing) ON \(table) FOR EACH \(level) EXECUTE PROCEDURE \(function)();
        END IF;
        """
    }

    /// Answers to `POST /api/tasks` with an `Idempotency-Key`, kept until `expires_at`.
    static let idempotencyStatements = [
        """
        CREATE TABLE IF NOT EXISTS task_management_idempotency_keys (
            key         text        PRIMARY KEY,
            fingerprint text        NOT NULL,
            status      integer     NOT NULL,
            task_id     integer     NOT NULL,
            etag        text        NOT NULL,
            body        text        NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now(),
            expires_at  timestamptz NOT NULL
        )
        """,
        "CREATE INDEX IF NOT EXISTS task_management_idempotency_keys_expires_at ON task_management_idempotency_keys (expires_at)",
    ]

    /// Whether the revision trigger is in place and enabled (the list carries a tag only then).
    static let revisionTriggerEnabled = """
        EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'tasks'::regclass AND tgname = 'task_management_revision' AND tgenabled IN ('O', 'A'))
        """

    /// Creates what is missing; false when the revision trigger could not be put in place.
    @discardableResult
    static func bootstrap(_ pool: ConnectionPool) async throws -> Bool {
        try await pool.withTransaction { connection in
            for statement in bootstrapStatements + revisionStatements + idempotencyStatements + eventStatements {
                _ = try await connection.simpleQuery(statement)
            }
            return try await connection.simpleQuery("SELECT \(revisionTriggerEnabled)").first?.bool(0) ?? false
        }
    }
}

/// How the list's revision is kept: one row per PostgreSQL backend that wrote to the table
/// (keyed by its pid), each raised by one at every statement of that backend, plus a base row;
/// the revision is their sum, which every committed write raises. A writer only ever touches its
/// own backend's row, so concurrent writers never wait for each other's commit. The base row
/// starts at the clock in microseconds, so a table created afresh (a restored or recreated
/// database) starts above any revision the old one handed out; rows of backends that have gone
/// are folded into it now and then (`Statements.compactRevisions`), which leaves the sum as it is.
enum RevisionCounter {
    static let baseSlot = 0
    static let clockMicroseconds = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"
}
