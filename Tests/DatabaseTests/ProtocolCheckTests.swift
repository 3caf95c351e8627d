import Foundation
import Logging
import Testing
import TestSupport
@testable import Database

/// A pool whose connections carry `name` as their application name, so a test can count them.
private func makePool(_ url: String, size: Int = 2, name: String) -> ConnectionPool {
    ConnectionPool(
        configuration: PoolConfiguration(
            conninfo: url, applicationName: name, maxConnections: size, acquireTimeout: .seconds(5), connectTimeout: .seconds(5)
        ),
        logger: Logger(label: "test")
    )
}

private func uniqueName(_ prefix: String) -> String { "\(prefix)_\(UInt32.random(in: 0...UInt32.max))" }

/// The server checks what PostgreSQL answers instead of trusting it: a result of another shape,
/// or a segment whose check does not come back, closes the connection and fails its requests
/// with `.protocolViolation` (503 for a client); nothing it sent reaches a caller.
@Suite("PostgreSQL answers are checked, not trusted (real database)", .enabled(if: TestPostgres.isConfigured, TestPostgres.skipReason))
struct ProtocolCheckTests {
    @Test(arguments: [
        // A column of another type than declared.
        PreparedStatement(name: "lie_type", sql: "SELECT 'x'::text AS n", readOnly: true, returns: .select([.init("n", .integer)])),
        // Another column name (a result meant for another statement).
        PreparedStatement(name: "lie_name", sql: "SELECT 1 AS m", readOnly: true, returns: .select([.init("n", .integer)])),
        // One column too many.
        PreparedStatement(name: "lie_count", sql: "SELECT 1 AS n, 2 AS o", readOnly: true, returns: .select([.init("n", .integer)])),
        // Two rows where at most one was declared.
        PreparedStatement(
            name: "lie_rows", sql: "SELECT n FROM generate_series(1, 2) AS n", readOnly: true, atMostOneRow: true,
            returns: .select([.init("n", .integer)])
        ),
        // Rows where a command without rows was declared.
        PreparedStatement(name: "lie_command", sql: "SELECT 1 AS n", readOnly: true, returns: .command("DELETE")),
    ])
    func aReadOfTheWrongShapePoisonsItsConnection(_ statement: PreparedStatement) async throws {
        let url = try TestPostgres.databaseURL
        let name = uniqueName("tm_shape")
        let pool = makePool(url, name: name)
        await pool.start()
        let fine = PreparedStatement(name: "fine", sql: "SELECT $1::int4 AS n", readOnly: true, returns: .select([.init("n", .integer)]))
        #expect(try await pool.query(fine, [.int(7)]).first?.int(0) == 7)
        let error = await #expect(throws: PostgresError.self) { try await pool.query(statement) }
        #expect(error?.kind == .protocolViolation)
        #expect(error?.message.contains(statement.name) == true, "\(String(describing: error))")
        // The poisoned connections were closed and replaced; the pool serves again.
        #expect(try await pool.query(fine, [.int(8)]).first?.int(0) == 8)
        #expect(await pool.statistics.inUse == 0)
        await pool.shutdown(gracePeriod: .seconds(1))
        #expect(PostgresConnection.reclaimedQueries.load(ordering: .relaxed) == 0)
    }

    @Test func aWriteOfTheWrongShapeFailsAndIsNeverSentAgain() async throws {
        let url = try TestPostgres.databaseURL
        let table = uniqueName("shape_writes")
        try TestPostgres.psql(url, "CREATE TABLE \(table) (n int4)")
        let pool = makePool(url, name: uniqueName("tm_write"))
        await pool.start()
        let insert = PreparedStatement(
            name: "insert_\(table)", sql: "INSERT INTO \(table) VALUES ($1) RETURNING n::text AS n", returns: .rows("INSERT", [.init("n", .integer)])
        )
        let error = await #expect(throws: PostgresError.self) { try await pool.query(insert, [.int(1)]) }
        #expect(error?.kind == .protocolViolation)
        #expect(error?.isTransient == true)  // a 503 for a client, which may retry
        // The INSERT ran once: a write whose answer cannot be trusted is never re-sent.
        #expect(try TestPostgres.psql(url, "SELECT count(*) FROM \(table)") == "1")
        await pool.shutdown(gracePeriod: .seconds(1))
        try TestPostgres.psql(url, "DROP TABLE \(table)")
    }

    /// The segment check is a prepared statement of the session: a session where it is gone (a
    /// pooler handed over another backend, say) fails its check and is closed.
    @Test func aSegmentWhoseCheckDoesNotComeBackPoisonsTheConnection() async throws {
        let url = try TestPostgres.databaseURL
        let name = uniqueName("tm_check")
        let pool = makePool(url, size: 1, name: name)
        await pool.start()
        let error = await #expect(throws: PostgresError.self) {
            try await pool.withConnection { connection in
                _ = try await connection.simpleQuery("DEALLOCATE \(PostgresConnection.checkStatement)")
            }
        }
        #expect(error?.kind == .protocolViolation)
        #expect(error?.message.contains("segment check") == true, "\(String(describing: error))")
        let fine = PreparedStatement(name: "fine", sql: "SELECT 1 AS n", readOnly: true, returns: .select([.init("n", .integer)]))
        #expect(try await pool.query(fine).first?.int(0) == 1)
        await pool.shutdown(gracePeriod: .seconds(1))
    }

    /// A statement this connection prepared that the server no longer has means the session is
    /// not the one it set up: poisoned, then prepared afresh on a new connection.
    @Test func aStatementGoneFromTheServerPoisonsTheConnection() async throws {
        let url = try TestPostgres.databaseURL
        let pool = makePool(url, size: 1, name: uniqueName("tm_gone"))
        await pool.start()
        let statement = PreparedStatement(name: "gone", sql: "SELECT 1 AS n", readOnly: true, returns: .select([.init("n", .integer)]))
        #expect(try await pool.query(statement).first?.int(0) == 1)
        let error = await #expect(throws: PostgresError.self) {
            try await pool.withConnection { connection in
                _ = try await connection.simpleQuery("DEALLOCATE gone")
                _ = try await connection.query(statement)
            }
        }
        #expect(error?.kind == .protocolViolation)
        #expect(error?.message.contains("is gone") == true, "\(String(describing: error))")
        #expect(try await pool.query(statement).first?.int(0) == 1)
        await pool.shutdown(gracePeriod: .seconds(1))
    }

    /// Queries in flight, waiting for a connection, or cancelled while waiting all get an
    /// answer when the pool shuts down under them; none is dropped (a dropped one would be
    /// answered by its deinit and counted).
    @Test(.timeLimit(.minutes(1))) func everyQueryIsAnsweredWhenThePoolShutsDownUnderIt() async throws {
        let url = try TestPostgres.databaseURL
        let pool = makePool(url, size: 2, name: uniqueName("tm_shutdown"))
        await pool.start()
        let sleep = PreparedStatement(
            name: "sleep", sql: "SELECT pg_sleep(0.3)::text AS s, $1::int4 AS n", readOnly: true,
            returns: .select([.init("s", .text), .init("n", .integer)])
        )
        let reclaimedBefore = PostgresConnection.reclaimedQueries.load(ordering: .relaxed)
        let outcomes = await withTaskGroup(of: String.self) { group in
            for index in 0..<60 {
                group.addTask {
                    do {
                        _ = try await pool.query(sleep, [.int(index)])
                        return "ok"
                    } catch let error as PostgresError {
                        return error.kind.rawValue
                    } catch {
                        return "\(type(of: error))"
                    }
                }
            }
            group.addTask {
                try? await Task.sleep(for: .milliseconds(100))
                await pool.shutdown(gracePeriod: .milliseconds(50))
                return "shutdown"
            }
            var outcomes: [String] = []
            for await outcome in group { outcomes.append(outcome) }
            return outcomes
        }
        #expect(outcomes.count == 61)
        #expect(outcomes.contains("ok") || outcomes.contains { $0 != "shutdown" })
        #expect(PostgresConnection.reclaimedQueries.load(ordering: .relaxed) == reclaimedBefore)
    }
}

/// A lease request is answered exactly once, whether its answer comes before its continuation
/// exists (the pool actor let other work in at an `await`) or after.
@Suite("Lease requests (pure)")
struct LeaseRequestTests {
    private struct Refused: Error {}

    @Test func anAnswerBeforeTheContinuationIsKeptForIt() async {
        let request = LeaseRequest()
        request.answer(.failure(Refused()))
        request.answer(.failure(CancellationError()))  // ignored: answered already
        await #expect(throws: Refused.self) {
            try await withCheckedThrowingContinuation { request.attach($0) }
        }
    }

    @Test func anAnswerAfterTheContinuationResumesIt() async {
        let request = LeaseRequest()
        let waiting = Task {
            try await withCheckedThrowingContinuation { request.attach($0) }
        }
        try? await Task.sleep(for: .milliseconds(20))
        request.answer(.failure(Refused()))
        request.answer(.failure(CancellationError()))  // ignored: a second resume would trap
        await #expect(throws: Refused.self) { try await waiting.value }
    }
}
