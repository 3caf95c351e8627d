import Database

/// Creates the tables when missing, as the original's migrations define them; never alters or
/// drops anything. Runs under an advisory lock so that pods starting together do not collide.
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

    static func bootstrap(_ pool: ConnectionPool) async throws {
        try await pool.withTransaction { connection in
            for statement in bootstrapStatements { _ = try await connection.simpleQuery(statement) }
        }
    }
}
