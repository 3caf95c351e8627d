import Foundation
import Testing
import TestSupport
@testable import App

/// Shared reads against PostgreSQL: while many clients read the same task, the settings and the
/// list (so reads of each are in flight all the time), a client reads its own acknowledged
/// writes every time, and sees a write committed from outside the server.
@Suite("Coalesced reads (real database)", .enabled(if: TestPostgres.isConfigured, TestPostgres.skipReason))
struct CoalescedReadDatabaseTests {
    @Test func underConcurrentReadsEveryClientSeesItsAcknowledgedWrites() async throws {
        try await withTestApp { app in
            var created: [Int] = []
            for index in 0..<10 { created.append(try #require(try await app.create("task \(index)")["id"] as? Int)) }
            let ids = created
            let readers = Task {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for reader in 0..<24 {
                        group.addTask {
                            let path = ["/api/tasks/\(ids[reader % ids.count])", "/api/settings", "/api/tasks"][reader % 3]
                            while !Task.isCancelled {
                                let response = try await app.get(path)
                                #expect(response.status == 200, "\(path): \(response.status)")
                            }
                        }
                    }
                    try await group.waitForAll()
                }
            }
            for round in 0..<40 {
                let id = ids[round % ids.count]
                #expect(try await app.send("PUT", "/api/tasks/\(id)", json: #"{"title": "round \#(round)"}"#).status == 200)
                #expect(try await app.get("/api/tasks/\(id)").jsonObject()["title"] as? String == "round \(round)")
                let dark = round % 2 == 0
                #expect(try await app.send("PUT", "/api/settings", json: #"{"dark_mode": \#(dark)}"#).status == 200)
                #expect(try await app.get("/api/settings").jsonObject()["dark_mode"] as? Bool == dark)
                let new = try #require(try await app.create("new in round \(round)")["id"] as? Int)
                let list = try JSONSerialization.jsonObject(with: Data(try await app.get("/api/tasks").body)) as! [[String: Any]]
                #expect(list.contains { $0["id"] as? Int == new }, "round \(round): the list holds the task just created")
                if round % 10 == 0 {
                    try TestPostgres.psql(app.databaseURL, "UPDATE tasks SET title = 'from psql \(round)' WHERE id = \(id)")
                    #expect(try await app.get("/api/tasks/\(id)").jsonObject()["title"] as? String == "from psql \(round)")
                }
            }
            readers.cancel()
            _ = try? await readers.value
        }
    }

    /// The server process's `/metrics` says how many requests each kind of shared read served
    /// and how many statements it ran for them.
    @Test func metricsCountRequestsAndTheStatementsRunForThem() async throws {
        let r = try await ReplicaTests.Replicas.start()
        defer { r.stop() }
        let created = try await ReplicaTests.send(r.a, "POST", "/api/tasks", #"{"title": "read by many"}"#)
        let id = try #require(try created.jsonObject()["id"] as? Int)
        let until = ContinuousClock.now + .seconds(1)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for reader in 0..<24 {
                group.addTask {
                    let path = ["/api/tasks/\(id)", "/api/settings", "/api/tasks"][reader % 3]
                    while ContinuousClock.now < until {
                        let status = try await ReplicaTests.send(r.a, "GET", path).status
                        #expect(status == 200, "\(path): \(status)")
                    }
                }
            }
            try await group.waitForAll()
        }
        let metrics = try await ReplicaTests.send(r.a, "GET", "/metrics").text
        func counter(_ name: String, _ read: String) -> Double {
            let prefix = "\(name){read=\"\(read)\"} "
            return metrics.split(separator: "\n").first { $0.hasPrefix(prefix) }.flatMap { Double($0.dropFirst(prefix.count)) } ?? 0
        }
        var requests = 0.0, statements = 0.0
        for read in ["task", "settings", "list"] {
            let (asked, run) = (counter("db_shared_read_requests_total", read), counter("db_shared_read_statements_total", read))
            #expect(asked >= run && run > 0, "\(read): \(asked) requests, \(run) statements")
            requests += asked
            statements += run
        }
        #expect(requests > statements, "\(requests) requests shared \(statements) statements")
    }
}
