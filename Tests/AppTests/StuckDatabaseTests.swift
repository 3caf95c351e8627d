import EventLoopCore
import Foundation
import Testing
import TestSupport
@testable import App

/// PostgreSQL connected but not answering: a table held under an exclusive lock while requests
/// keep coming. Every request is answered (503 within the query timeout plus a second, or 200
/// once the lock goes), the other table keeps answering, readiness turns 503 and back, nothing
/// acknowledged is lost, and the pool never opens more than its size.
@Suite("A stuck database", .enabled(if: TestPostgres.isConfigured, TestPostgres.skipReason))
struct StuckDatabaseTests {
    private struct Outcome: Sendable {
        let path: String
        let status: Int
        let elapsed: Duration
        let createdID: Int?
    }

    @Test func aLockedTableDelaysOnlyItsOwnRequestsAndEveryRequestIsAnswered() async throws {
        let queryTimeout = Duration.seconds(1)
        let poolSize = 8
        let app = try await TestApp.start(environment: [
            "DB_QUERY_TIMEOUT_MS": "1000", "HTTP_TIMEOUT_S": "10", "READY_PROBE_TIMEOUT_MS": "300", "DB_STALL_THRESHOLD_MS": "100",
            "DB_POOL_SIZE": "\(poolSize)",
        ])
        do {
            try await app.create("before the lock")
            #expect(try await app.get("/api/settings").status == 200)
            #expect(try await app.get("/readyz").status == 200)

            let lockHeld = Duration.seconds(5)
            let url = app.databaseURL
            let lock = Task {
                try await offCooperativePool {
                    try TestPostgres.psql(url, "BEGIN; LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(5); COMMIT;")
                }
            }
            try await Task.sleep(for: .milliseconds(300))
            let lockStarted = ContinuousClock.now
            let until = lockStarted + lockHeld + .seconds(1)
            let outcomes = LockedValue<[Outcome]>([])
            let connectionsSeen = LockedValue<Int>(0)
            let port = app.port

            try await withThrowingTaskGroup(of: Void.self) { group in
                // Requests on the locked table: reads and creates, 12 at a time.
                for worker in 0..<12 {
                    group.addTask {
                        var index = 0
                        while ContinuousClock.now < until {
                            index += 1
                            let started = ContinuousClock.now
                            let response: TestResponse
                            let path: String
                            switch (worker + index) % 3 {
                            case 0:
                                path = "POST /api/tasks"
                                response = try await httpJSON(port: port, "POST", "/api/tasks", "{\"title\":\"w\(worker)-\(index)\"}")
                            case 1:
                                path = "/api/tasks/1"
                                response = try await httpRequest(port: port, "GET", path)
                            default:
                                path = "/api/tasks"
                                response = try await httpRequest(port: port, "GET", path)
                            }
                            let id = response.status == 201 ? (try response.jsonObject())["id"] as? Int : nil
                            outcomes.withLock { $0.append(Outcome(path: path, status: response.status, elapsed: ContinuousClock.now - started, createdID: id)) }
                        }
                    }
                }
                // The other table, one request at a time, and readiness as a kubelet polls it.
                for (path, pause) in [("/api/settings", Duration.milliseconds(20)), ("/readyz", .milliseconds(200))] {
                    group.addTask {
                        while ContinuousClock.now < until {
                            let started = ContinuousClock.now
                            let response = try await httpRequest(port: port, "GET", path)
                            outcomes.withLock { $0.append(Outcome(path: path, status: response.status, elapsed: ContinuousClock.now - started, createdID: nil)) }
                            try await Task.sleep(for: pause)
                        }
                    }
                }
                // The server's connections as PostgreSQL sees them.
                group.addTask {
                    while ContinuousClock.now < until {
                        let count = try await offCooperativePool {
                            try TestPostgres.psql(url, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'task-management' AND datname = current_database()")
                        }
                        connectionsSeen.withLock { $0 = max($0, Int(count.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0) }
                        try await Task.sleep(for: .milliseconds(250))
                    }
                }
                try await group.waitForAll()
            }
            _ = try await lock.value

            let all = outcomes.withLock { $0 }
            let locked = all.filter { $0.path.contains("/api/tasks") }
            // Every request was answered: 200/201, or 503 within the query timeout plus a second.
            #expect(!locked.isEmpty)
            for outcome in locked {
                #expect([200, 201, 503].contains(outcome.status), "\(outcome.path) answered \(outcome.status)")
                if outcome.status == 503 { #expect(outcome.elapsed < queryTimeout + .seconds(1), "\(outcome.path): 503 after \(outcome.elapsed)") }
            }
            #expect(locked.contains { $0.status == 503 })
            // The settings table kept answering, mostly in milliseconds.
            let settings = all.filter { $0.path == "/api/settings" }
            #expect(settings.count > 20)
            #expect(settings.allSatisfy { $0.status == 200 }, "settings: \(settings.filter { $0.status != 200 }.map { "\($0.status) after \($0.elapsed)" })")
            let fast = settings.filter { $0.elapsed < .milliseconds(250) }.count
            #expect(fast * 10 >= settings.count * 9, "\(fast) of \(settings.count) settings reads under 250 ms")
            // Readiness went 503 during the lock and 200 after it.
            let ready = all.filter { $0.path == "/readyz" }
            #expect(ready.contains { $0.status == 503 })
            #expect(ready.allSatisfy { $0.elapsed < .seconds(3) })
            #expect(try await app.get("/readyz").status == 200)
            // Nothing acknowledged was lost; the pool stayed within its size.
            let created = Set(locked.compactMap(\.createdID))
            let stored = Set(try await app.get("/api/tasks").jsonArray().compactMap { $0["id"] as? Int })
            #expect(created.isSubset(of: stored))
            #expect(connectionsSeen.withLock { $0 } <= poolSize)
            #expect(try await app.get("/api/settings").status == 200)
            let times = settings.map(\.elapsed).sorted()
            print("stuck database: task requests \(Dictionary(grouping: locked, by: \.status).mapValues(\.count)), "
                + "slowest 503 \(locked.filter { $0.status == 503 }.map(\.elapsed).max() ?? .zero); settings reads \(settings.count), "
                + "median \(times[times.count / 2]), max \(times.last ?? .zero); readyz \(ready.map(\.status)); "
                + "server connections seen \(connectionsSeen.withLock { $0 })")
        } catch {
            await app.stop()
            throw error
        }
        await app.stop()
    }
}
