import Foundation
import Logging
import Prometheus
import Testing
import TestSupport
@testable import App

/// The two database shapes the original service left behind.
enum SchemaVariant: String, CaseIterable, Sendable, CustomTestStringConvertible {
    /// Alembic migrations: `status varchar(50)`, `timestamptz` (the server creates this itself).
    case alembic
    /// SQLAlchemy `create_all`: enum `taskstatus`, `timestamp without time zone` holding UTC.
    case createAll

    var testDescription: String { rawValue }

    var setupSQL: String? {
        switch self {
        case .alembic:
            return nil
        case .createAll:
            return """
                CREATE TYPE taskstatus AS ENUM ('TODO', 'IN_PROGRESS', 'DONE');
                CREATE TABLE tasks (
                    id SERIAL PRIMARY KEY, title VARCHAR(200) NOT NULL, description TEXT,
                    status taskstatus NOT NULL, created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
                    updated_at TIMESTAMP WITHOUT TIME ZONE NOT NULL
                );
                CREATE TABLE settings (id SERIAL PRIMARY KEY, dark_mode BOOLEAN, updated_at TIMESTAMP WITHOUT TIME ZONE);
                """
        }
    }
}

/// The whole application on port 0 over a fresh database of the given shape.
struct TestApp {
    let application: Application
    let port: Int
    let databaseURL: String

    /// With `TEST_PGBOUNCER_PORT` set (`make test`'s PgBouncer pass), the application reaches its
    /// database through the PgBouncer in transaction pooling mode listening there, with
    /// `DB_PGBOUNCER=transaction`; the tests' own psql still goes direct.
    /// `database`: serve that database (another app's) instead of a new one.
    static func start(
        _ variant: SchemaVariant = .alembic, environment extra: [String: String] = [:], database: String? = nil
    ) async throws -> TestApp {
        let url: String
        if let database {
            url = database
        } else {
            url = try TestPostgres.createDatabase()
            if let sql = variant.setupSQL { try TestPostgres.psql(url, sql) }
        }
        var environment = ["DATABASE_URL": url, "HOST": "127.0.0.1", "PORT": "0", "LOG_LEVEL": "warning", "DB_POOL_SIZE": "8"]
        if let bouncer = ProcessInfo.processInfo.environment["TEST_PGBOUNCER_PORT"].flatMap(Int.init) {
            var components = URLComponents(string: url)!
            components.port = bouncer
            environment["DATABASE_URL"] = components.string!
            environment["DB_PGBOUNCER"] = "transaction"
        }
        environment.merge(extra) { $1 }
        let configuration = try AppConfiguration(environment: environment)
        let application = try await Application.make(configuration, registry: PrometheusCollectorRegistry(), logger: Logger(label: "test"))
        try application.server.start()
        return TestApp(application: application, port: application.server.port, databaseURL: url)
    }

    func stop() async {
        await application.server.shutdown(gracePeriod: .seconds(2))
        await application.pool.shutdown(gracePeriod: .seconds(1))
        await application.eventLoops.stop()
    }

    func get(_ path: String, headers: [(String, String)] = []) async throws -> TestResponse {
        try await httpRequest(port: port, "GET", path, headers: headers)
    }

    func send(_ method: String, _ path: String, json: String) async throws -> TestResponse {
        try await httpJSON(port: port, method, path, json)
    }

    /// Every row of `tasks` as psql prints it, to prove a failed request changed nothing.
    func tableSnapshot() throws -> String {
        try TestPostgres.psql(databaseURL, "SELECT id, title, description, status, created_at, updated_at FROM tasks ORDER BY id")
            + "|" + TestPostgres.psql(databaseURL, "SELECT id, dark_mode, updated_at FROM settings ORDER BY id")
    }

    @discardableResult
    func create(_ title: String, description: String? = nil, status: String? = nil) async throws -> [String: Any] {
        var object: [String: Any] = ["title": title]
        if let description { object["description"] = description }
        if let status { object["status"] = status }
        let body = String(decoding: try JSONSerialization.data(withJSONObject: object), as: UTF8.self)
        let response = try await send("POST", "/api/tasks", json: body)
        guard response.status == 201 else { throw TestClientError("create failed: \(response.status) \(response.text)") }
        return try response.jsonObject()
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00`, as Python's isoformat writes UTC.
func isPythonISO(_ value: Any?) -> Bool {
    guard let text = value as? String else { return false }
    return text.range(of: #"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?\+00:00$"#, options: .regularExpression) != nil
}

/// Runs `body` against a fresh application and stops it afterwards, whether `body` threw or
/// not: no server outlives its test.
func withTestApp<Result>(
    _ variant: SchemaVariant = .alembic, environment: [String: String] = [:], _ body: (TestApp) async throws -> Result
) async throws -> Result {
    let app = try await TestApp.start(variant, environment: environment)
    do {
        let result = try await body(app)
        await app.stop()
        return result
    } catch {
        await app.stop()
        throw error
    }
}
