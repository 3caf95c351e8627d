import Foundation
import Testing
import TestSupport
@testable import App

/// `GET /api/events` across two server processes on one database: changes travel through
/// PostgreSQL (NOTIFY from triggers, one LISTEN connection per process), in commit order.
@Suite("Live updates across replicas", .enabled(if: TestPostgres.isConfigured, TestPostgres.skipReason), .serialized)
struct EventFeedTests {
    typealias Replicas = ReplicaTests.Replicas

    /// Waits until `port`'s process listens for notifications (its listener connects at start).
    static func waitForListener(_ port: Int) async throws {
        for _ in 0..<100 {
            let metrics = try await httpRequest(port: port, "GET", "/metrics").text
            if metrics.contains("sse_listener_connected 1") { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw TestClientError("the listener of \(port) never connected")
    }

    /// A subscriber on `port`, past the stream's opening `retry:` block.
    static func subscribe(_ port: Int, path: String = "/api/events", headers: [(String, String)] = []) async throws -> EventStreamClient {
        try await offCooperativePool {
            let client = try EventStreamClient(port: port, path: path, headers: headers)
            guard client.status == 200 else { return client }
            let opening = try client.next()
            #expect(opening?.retry != nil)
            return client
        }
    }

    static func next(_ client: EventStreamClient) async throws -> EventStreamClient.Event? {
        try await offCooperativePool { try client.nextNamed() }
    }

    @Test func aSubscriberOfOneReplicaSeesChangesThroughTheOtherInOrderWithinASecond() async throws {
        let r = try await Replicas.start()
        defer { r.stop() }
        try await Self.waitForListener(r.b)
        let client = try await Self.subscribe(r.b)
        #expect(client.header("Content-Type") == "text/event-stream")
        var ids: [String] = []
        let created = try await ReplicaTests.send(r.a, "POST", "/api/tasks", #"{"title": "live ☃"}"#)
        let id = try #require(try created.jsonObject()["id"] as? Int)
        let started = ContinuousClock.now
        let first = try #require(try await Self.next(client))
        #expect(ContinuousClock.now - started < .seconds(1))
        #expect(first.name == "task.created")
        let fetched = try await ReplicaTests.send(r.a, "GET", "/api/tasks/\(id)")
        #expect(first.data.map { $0 + "\n" } == fetched.text, "the task as GET gives it")
        ids.append(try #require(first.id))

        _ = try await ReplicaTests.send(r.a, "PUT", "/api/tasks/\(id)", #"{"status": "DONE"}"#)
        let second = try #require(try await Self.next(client))
        #expect(second.name == "task.updated")
        #expect(second.data.map { $0 + "\n" } == (try await ReplicaTests.send(r.b, "GET", "/api/tasks/\(id)").text))
        ids.append(try #require(second.id))

        _ = try await ReplicaTests.send(r.a, "DELETE", "/api/tasks/\(id)")
        let third = try #require(try await Self.next(client))
        #expect(third.name == "task.deleted" && third.data == "{\"id\":\(id)}")
        ids.append(try #require(third.id))

        _ = try await ReplicaTests.send(r.a, "PUT", "/api/settings", #"{"dark_mode": true}"#)
        let fourth = try #require(try await Self.next(client))
        #expect(fourth.name == "settings.updated")
        #expect(fourth.data.map { $0 + "\n" } == (try await ReplicaTests.send(r.a, "GET", "/api/settings").text))
        ids.append(try #require(fourth.id))
        let sequence = ids.map { Int($0.split(separator: "-").last!)! }
        #expect(sequence == sequence.sorted() && Set(sequence).count == 4, "\(ids)")

        // Writes from outside the server (psql) are seen too; a rolled-back one never is.
        try TestPostgres.psql(r.databaseURL, "BEGIN; INSERT INTO tasks (title, status) VALUES ('rolled back', 'TODO'); ROLLBACK;")
        try TestPostgres.psql(r.databaseURL, "INSERT INTO tasks (title, status) VALUES ('from psql', 'TODO')")
        let outside = try #require(try await Self.next(client))
        #expect(outside.name == "task.created" && outside.data?.contains("from psql") == true, "\(outside)")
    }

    @Test func underAWriteLoadEveryChangeArrivesInOrder() async throws {
        let r = try await Replicas.start()
        defer { r.stop() }
        try await Self.waitForListener(r.b)
        let client = try await Self.subscribe(r.b)
        let count = 300
        // Created 10 at a time through A; each event's delay from its 201 is measured.
        let answered = LockedBox<[Int: ContinuousClock.Instant]>([:])
        let writer = Task {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for batch in 0..<(count / 10) {
                    for index in 0..<10 {
                        group.addTask {
                            let response = try await ReplicaTests.send(r.a, "POST", "/api/tasks", #"{"title": "load \#(batch * 10 + index)"}"#)
                            let id = try response.jsonObject()["id"] as! Int
                            answered.withLock { $0[id] = ContinuousClock.now }
                        }
                    }
                    try await group.waitForAll()
                }
            }
        }
        var seen: [(id: Int, at: ContinuousClock.Instant, sequence: Int)] = []
        while seen.count < count {
            let event = try #require(try await Self.next(client), "the stream ended after \(seen.count) events")
            #expect(event.name == "task.created")
            let data = try JSONSerialization.jsonObject(with: Data(event.data!.utf8)) as! [String: Any]
            seen.append((data["id"] as! Int, ContinuousClock.now, Int(event.id!.split(separator: "-").last!)!))
        }
        try await writer.value
        #expect(Set(seen.map(\.id)).count == count, "every task once")
        #expect(seen.map(\.sequence) == seen.map(\.sequence).sorted())
        let delays = seen.compactMap { event in answered.withLock { $0[event.id] }.map { max(.zero, event.at - $0) } }.sorted()
        let p50 = delays[delays.count / 2], p99 = delays[delays.count * 99 / 100]
        print("event delivery after the 201, \(delays.count) events: p50 \(p50), p99 \(p99), max \(delays.last!)")
        #expect(p99 < .seconds(1))
    }

    /// Notifications that come together are relayed together (their rows read in one statement
    /// per 1,000): a transaction of 1,203 changes arrives whole, in its order, each event with
    /// the row as it is once committed; a row created and deleted in it gives only its deletion.
    @Test func aBurstCommittedAtOnceArrivesWholeAndInOrder() async throws {
        let r = try await Replicas.start(extra: ["SSE_SUBSCRIBER_BUFFER_EVENTS": "5000"])
        defer { r.stop() }
        try await Self.waitForListener(r.b)
        let client = try await Self.subscribe(r.b)
        try TestPostgres.psql(r.databaseURL, """
            BEGIN;
            INSERT INTO tasks (title, status) SELECT 'burst ' || g, 'TODO' FROM generate_series(1, 1200) g;
            UPDATE tasks SET status = 'DONE' WHERE title IN ('burst 1', 'burst 1200');
            INSERT INTO tasks (title, status) VALUES ('short-lived', 'TODO');
            DELETE FROM tasks WHERE title = 'short-lived';
            COMMIT;
            """)
        var events: [EventStreamClient.Event] = []
        while events.count < 1203 {
            events.append(try #require(try await Self.next(client), "the stream ended after \(events.count) events"))
        }
        let names = events.map(\.name)
        #expect(names == Array(repeating: "task.created", count: 1200) + ["task.updated", "task.updated", "task.deleted"])
        let sequence = events.map { Int($0.id!.split(separator: "-").last!)! }
        #expect(sequence == Array(sequence.first!..<(sequence.first! + 1203)), "consecutive ids")
        let created = try events.prefix(1200).map { try JSONSerialization.jsonObject(with: Data($0.data!.utf8)) as! [String: Any] }
        #expect(created.map { $0["title"] as! String } == (1...1200).map { "burst \($0)" })
        let first = try #require(created.first?["id"] as? Int)
        #expect(events[0].data.map { $0 + "\n" } == (try await ReplicaTests.send(r.b, "GET", "/api/tasks/\(first)").text), "the row as committed")
        #expect(created[0]["status"] as? String == "DONE" && created[1]["status"] as? String == "TODO")
        #expect(events[1202].data == "{\"id\":\(first + 1200)}", "the short-lived row: only its deletion")
    }

    @Test func aLostListenConnectionGivesResyncAndTheFeedRecovers() async throws {
        let r = try await Replicas.start()
        defer { r.stop() }
        try await Self.waitForListener(r.b)
        let client = try await Self.subscribe(r.b)
        let killed = try TestPostgres.psql(r.databaseURL, """
            SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
            WHERE datname = current_database() AND application_name = 'task-management listener'
            """)
        #expect(killed == "2", "one listener per process")
        let resync = try #require(try await Self.next(client))
        #expect(resync.name == "resync" && resync.id == nil)
        try await Self.waitForListener(r.b)
        _ = try await ReplicaTests.send(r.a, "POST", "/api/tasks", #"{"title": "after the drop"}"#)
        let event = try #require(try await Self.next(client))
        #expect(event.name == "task.created" && event.data?.contains("after the drop") == true)
    }

    @Test func lastEventIDResumesWhatIsHeldAndResyncsOtherwise() async throws {
        let r = try await Replicas.start(extra: ["SSE_HISTORY_EVENTS": "3"])
        defer { r.stop() }
        try await Self.waitForListener(r.a)
        let client = try await Self.subscribe(r.a)
        var events: [EventStreamClient.Event] = []
        for index in 0..<5 {
            _ = try await ReplicaTests.send(r.a, "POST", "/api/tasks", #"{"title": "resume \#(index)"}"#)
            events.append(try #require(try await Self.next(client)))
        }
        // Still held (the last three): what followed it, in order.
        let resumed = try await Self.subscribe(r.a, headers: [("Last-Event-ID", events[2].id!)])
        #expect(try await Self.next(resumed)?.id == events[3].id)
        #expect(try await Self.next(resumed)?.id == events[4].id)
        // No longer held, or another process's (B's feed never gave it): resync first.
        for (port, id) in [(r.a, events[0].id!), (r.b, events[4].id!), (r.a, "garbage")] {
            let stale = try await Self.subscribe(port, headers: [("Last-Event-ID", id)])
            #expect(try await Self.next(stale)?.name == "resync", "\(port) \(id)")
        }
    }

    @Test func topicsFilterBadTopicsAreA400AndStreamsAreBounded() async throws {
        let r = try await Replicas.start(extra: ["SSE_MAX_SUBSCRIBERS": "2"])
        defer { r.stop() }
        try await Self.waitForListener(r.a)
        let settingsOnly = try await Self.subscribe(r.a, path: "/api/events?topics=settings")
        _ = try await Self.subscribe(r.a)
        let refused = try await httpRequest(port: r.a, "GET", "/api/events")
        #expect(refused.status == 503 && refused.header("Retry-After") != nil)
        #expect(try await httpRequest(port: r.b, "GET", "/api/events?topics=tasks,nope").status == 400)
        _ = try await ReplicaTests.send(r.a, "POST", "/api/tasks", #"{"title": "not for settings"}"#)
        _ = try await ReplicaTests.send(r.a, "PUT", "/api/settings", #"{"dark_mode": true}"#)
        #expect(try await Self.next(settingsOnly)?.name == "settings.updated")
    }

    @Test func aSubscriberThatNeverReadsIsCutOffWithinItsBounds() async throws {
        let r = try await Replicas.start(extra: [
            "SSE_SUBSCRIBER_BUFFER_EVENTS": "20", "HTTP_TIMEOUT_S": "3", "DB_QUERY_TIMEOUT_MS": "2000", "SSE_HEARTBEAT_S": "1",
            "HTTP_MAX_PENDING_OUTPUT_BYTES": "65536",
        ])
        defer { r.stop() }
        try await Self.waitForListener(r.a)
        let port = r.a
        let stuck = try await offCooperativePool { () -> RawConnection in
            let connection = try RawConnection(port: port, timeout: 10, receiveBuffer: 4096)
            try connection.send("GET /api/events HTTP/1.1\r\nHost: t\r\n\r\n")
            return connection
        }
        let healthy = try await Self.subscribe(r.a)
        // The healthy subscriber reads while the changes are made; the stuck one never does.
        let reader = Task { () -> Int in
            var received = 0
            while received < 100, let event = try await Self.next(healthy) {
                if event.name == "task.created" { received += 1 }
            }
            return received
        }
        // 100 events of 64 KB: more than the kernel's socket buffers hold for the stuck client.
        let description = String(repeating: "x", count: 65536)
        for index in 0..<100 {
            _ = try await ReplicaTests.send(r.b, "POST", "/api/tasks", #"{"title": "flood \#(index)", "description": "\#(description)"}"#)
        }
        #expect(try await reader.value == 100, "the healthy subscriber gets every event")
        try await Task.sleep(for: .seconds(4))
        let metrics = try await httpRequest(port: r.a, "GET", "/metrics").text
        #expect(metrics.contains("sse_subscribers 1"), "only the healthy one is left")
        let rss = try String(contentsOfFile: "/proc/\(r.pids[0])/status", encoding: .utf8)
            .split(separator: "\n").first { $0.hasPrefix("VmRSS:") }.flatMap { Int($0.split(separator: " ", omittingEmptySubsequences: true)[1]) } ?? 0
        #expect(rss < 128 * 1024, "RSS \(rss) KiB")
        _ = try await offCooperativePool { stuck.readToEnd() }  // closed by the server: returns
    }

    @Test func sigtermEndsTheStreamsWithARetryHintAtOnce() async throws {
        let r = try await Replicas.start()
        defer { r.stop() }
        try await Self.waitForListener(r.a)
        let client = try await Self.subscribe(r.a)
        let started = ContinuousClock.now
        kill(r.pids[0], SIGTERM)
        // Whatever was on its way (a heartbeat), then the retry hint, then the end of the stream.
        let rest = try await offCooperativePool { () -> [EventStreamClient.Event] in
            var rest: [EventStreamClient.Event] = []
            while let event = try client.next() { rest.append(event) }
            return rest
        }
        #expect(rest.last?.retry != nil, "a retry: hint last: \(rest)")
        #expect(rest.allSatisfy { $0.name == nil }, "no events: \(rest)")
        #expect(BinaryTests.waitForExit(r.pids[0], timeout: 5) == 0)
        #expect(ContinuousClock.now - started < .seconds(5))
    }
}

/// A value behind a lock, for test tasks.
final class LockedBox<Value>: @unchecked Sendable {  // `value` is only touched while `lock` is held
    private let lock = NSLock()
    private var value: Value
    init(_ value: Value) { self.value = value }
    func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}
