import Foundation
import Testing
import TestSupport
@testable import App

/// Lists longer than `LIST_BUFFERED_ROWS`, streamed from a cursor: the same bytes as the list
/// written whole, bounded by the client's reading, and no harm to other requests.
@Suite("Streamed lists", .enabled(if: TestPostgres.isConfigured, TestPostgres.skipReason), .serialized)
struct StreamedListTests {
    /// Every order the list has.
    static let orders: [String] = ["/api/tasks"] + ["title", "status", "created_at", "updated_at"].flatMap { field in
        ["asc", "desc"].map { "/api/tasks?sort_by=\(field)&sort_order=\($0)" }
    }

    /// `count` tasks with ties in every sort key, NULL and non-ASCII descriptions, every status.
    static func seed(_ url: String, count: Int) throws {
        guard count > 0 else { return }
        try TestPostgres.psql(url, """
            INSERT INTO tasks (title, description, status, created_at, updated_at)
            SELECT 'task ' || (n % 97) || CASE WHEN n % 5 = 0 THEN ' é ☃' ELSE '' END,
                   CASE WHEN n % 3 = 0 THEN NULL ELSE repeat('d', n % 300) || ' "q" \\ 😀' END,
                   (ARRAY['TODO', 'IN_PROGRESS', 'DONE'])[1 + n % 3]::\(try statusType(url)),
                   timestamp '2026-01-01' + (n % 50) * interval '1 second',
                   timestamp '2026-02-01' + (n % 70) * interval '1 millisecond'
            FROM generate_series(1, \(count)) AS n
            """)
    }

    private static func statusType(_ url: String) throws -> String {
        try TestPostgres.psql(url, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'tasks'::regclass AND attname = 'status'")
    }

    @Test(arguments: SchemaVariant.allCases)
    func aStreamedListIsByteForByteTheListWrittenWhole(_ variant: SchemaVariant) async throws {
        let whole = try await TestApp.start(variant, environment: ["LIST_BUFFERED_ROWS": "1000000"])
        let streamed = try await TestApp.start(
            variant, environment: ["LIST_BUFFERED_ROWS": "1", "LIST_FETCH_ROWS": "7"], database: whole.databaseURL
        )
        defer { Task { await whole.stop(); await streamed.stop() } }
        var seeded = 0
        for size in [0, 1, 100, 10_000] {
            try Self.seed(whole.databaseURL, count: size - seeded)
            seeded = size
            for path in Self.orders {
                let expected = try await whole.get(path)
                let got = try await streamed.get(path)
                #expect(expected.status == 200 && got.status == 200)
                #expect(expected.header("Transfer-Encoding") == nil)
                #expect(got.header("Transfer-Encoding") == (size > 1 ? "chunked" : nil), "\(size) rows, \(path)")
                #expect(got.body == expected.body, "\(size) rows, \(path): \(got.body.count) bytes streamed, \(expected.body.count) whole")
                #expect(got.header("ETag") == expected.header("ETag"))
                #expect(try got.jsonArray().count == size)
            }
        }
    }

    @Test func aClientThatStopsReadingHoldsOneSlotAndBlocksNothingElse() async throws {
        let app = try await TestApp.start(environment: ["LIST_BUFFERED_ROWS": "10", "LIST_MAX_STREAMS": "1", "HTTP_MAX_PENDING_OUTPUT_BYTES": "65536"])
        defer { Task { await app.stop() } }
        // About 12 MB of JSON: more than the kernel's socket buffers take.
        try Self.seed(app.databaseURL, count: 40_000)
        let port = app.port
        let stalled = try await offCooperativePool { () -> RawConnection in
            let connection = try RawConnection(port: port, receiveBuffer: 4096)
            try connection.send("GET /api/tasks HTTP/1.1\r\nHost: t\r\n\r\n")
            return connection
        }
        try await Task.sleep(for: .milliseconds(500))
        // It holds the one slot: another long list is refused at once, with a retry hint.
        let refused = try await app.get("/api/tasks?sort_by=title&sort_order=asc")
        #expect(refused.status == 503)
        #expect(refused.header("Retry-After") != nil)
        // Everything else is served as usual, promptly.
        let started = ContinuousClock.now
        for _ in 0..<20 {
            #expect(try await app.get("/api/tasks/1").status == 200)
            #expect(try await app.get("/api/settings").status == 200)
        }
        #expect(ContinuousClock.now - started < .seconds(2))
        // The client leaves: its stream ends, its transaction rolls back, the slot comes back.
        stalled.close()
        var status = 0
        for _ in 0..<50 {
            status = try await app.get("/api/tasks?sort_by=title&sort_order=asc").status
            if status == 200 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(status == 200)
        #expect(try TestPostgres.psql(app.databaseURL, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%'") == "0")
    }

    @Test func headOnALongListAnswersTheHeadAndGivesItsSlotBack() async throws {
        let app = try await TestApp.start(environment: ["LIST_BUFFERED_ROWS": "10", "LIST_MAX_STREAMS": "1", "DB_ACQUIRE_TIMEOUT_MS": "300"])
        defer { Task { await app.stop() } }
        try Self.seed(app.databaseURL, count: 50)
        for _ in 0..<3 {
            let head = try await httpRequest(port: app.port, "HEAD", "/api/tasks")
            #expect(head.status == 200 && head.header("Transfer-Encoding") == "chunked" && head.body.isEmpty)
        }
        let list = try await app.get("/api/tasks")
        #expect(list.status == 200)
        #expect(try list.jsonArray().count == 50)
    }

    @Test func aStreamWhoseDatabaseConnectionDiesIsCutShortNeverEndedAsWhole() async throws {
        let app = try await TestApp.start(environment: ["LIST_BUFFERED_ROWS": "10", "HTTP_MAX_PENDING_OUTPUT_BYTES": "65536"])
        defer { Task { await app.stop() } }
        try Self.seed(app.databaseURL, count: 40_000)
        let port = app.port
        let reader = try await offCooperativePool { () -> RawConnection in
            let connection = try RawConnection(port: port, receiveBuffer: 4096)
            try connection.send("GET /api/tasks HTTP/1.1\r\nHost: t\r\n\r\n")
            return connection
        }
        try await Task.sleep(for: .milliseconds(500))
        // The stream's backend is the one holding a cursor open.
        let killed = try TestPostgres.psql(app.databaseURL, """
            SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
            WHERE datname = current_database() AND state LIKE 'idle in transaction%'
            """)
        #expect(killed == "1")
        _ = try await offCooperativePool {
            #expect(throws: TestClientError.self, "the body must not end as if whole") { try reader.readResponse() }
        }
        // The server goes on serving long lists.
        let list = try await app.get("/api/tasks?sort_by=title&sort_order=desc")
        #expect(list.status == 200)
        #expect(try list.jsonArray().count == 40_000)
    }

}
