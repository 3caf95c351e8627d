import Foundation
import Testing
import TestSupport
@testable import App

/// Two `task-management` processes on one database, as two pods run: validators, preconditions
/// and idempotency keys hold across them.
@Suite("Two replicas on one database", .enabled(if: TestPostgres.isConfigured, TestPostgres.skipReason), .serialized)
struct ReplicaTests {
    /// Two server processes on a fresh database (or on `databaseURL` for the second through a proxy).
    struct Replicas {
        let a: Int
        let b: Int
        let databaseURL: String
        let pids: [pid_t]
        let logs: [String]

        static func start(extra: [String: String] = [:]) async throws -> Replicas {
            let url = try TestPostgres.createDatabase()
            let first = try await offCooperativePool { try BinaryTests.launch(databaseURL: url, extra: extra) }
            let second = try await offCooperativePool { try BinaryTests.launch(databaseURL: url, extra: extra) }
            return Replicas(a: first.port, b: second.port, databaseURL: url, pids: [first.pid, second.pid], logs: [first.log, second.log])
        }

        func stop() {
            for pid in pids where kill(pid, 0) == 0 {  // one a test stopped itself is gone already
                kill(pid, SIGTERM)
                if BinaryTests.waitForExit(pid, timeout: 15) == nil { kill(pid, SIGKILL) }
            }
            for log in logs { try? FileManager.default.removeItem(atPath: log) }
        }
    }

    static func withReplicas(_ body: (Replicas) async throws -> Void) async throws {
        let replicas = try await Replicas.start()
        defer { replicas.stop() }
        try await body(replicas)
    }

    static func send(_ port: Int, _ method: String, _ path: String, _ body: String? = nil, _ headers: [(String, String)] = []) async throws -> TestResponse {
        try await httpRequest(
            port: port, method, path, headers: (body == nil ? [] : [("Content-Type", "application/json")]) + headers, body: body.map { Array($0.utf8) }
        )
    }

    @Test func aTagFromOneReplicaValidatesOnTheOtherUntilEitherWrites() async throws {
        try await Self.withReplicas { r in
            let created = try await Self.send(r.a, "POST", "/api/tasks", #"{"title": "shared"}"#)
            let id = try #require(try created.jsonObject()["id"] as? Int)
            let path = "/api/tasks/\(id)"
            let list = "/api/tasks?sort_by=created_at&sort_order=desc"
            let taskTag = try #require(try await Self.send(r.a, "GET", path).header("ETag"))
            let listTag = try #require(try await Self.send(r.a, "GET", list).header("ETag"))
            let settingsTag = try #require(try await Self.send(r.a, "GET", "/api/settings").header("ETag"))
            #expect(try await Self.send(r.b, "GET", path).header("ETag") == taskTag)
            #expect(try await Self.send(r.b, "GET", path, nil, [("If-None-Match", taskTag)]).status == 304)
            #expect(try await Self.send(r.b, "GET", list, nil, [("If-None-Match", listTag)]).status == 304)
            #expect(try await Self.send(r.b, "GET", "/api/settings", nil, [("If-None-Match", settingsTag)]).status == 304)

            // A write through A makes what B validated stale, at once.
            #expect(try await Self.send(r.a, "PUT", path, #"{"status": "DONE"}"#).status == 200)
            #expect(try await Self.send(r.a, "PUT", "/api/settings", #"{"dark_mode": true}"#).status == 200)
            let task = try await Self.send(r.b, "GET", path, nil, [("If-None-Match", taskTag)])
            #expect(task.status == 200 && task.header("ETag") != taskTag)
            let listed = try await Self.send(r.b, "GET", list, nil, [("If-None-Match", listTag)])
            #expect(listed.status == 200 && listed.header("ETag") != listTag)
            #expect(try listed.jsonArray().first?["status"] as? String == "DONE")
            #expect(try await Self.send(r.b, "GET", "/api/settings", nil, [("If-None-Match", settingsTag)]).status == 200)
            // And B's writes check A's tags.
            #expect(try await Self.send(r.b, "PUT", path, #"{"title": "late"}"#, [("If-Match", taskTag)]).status == 412)
            #expect(try await Self.send(r.b, "PUT", path, #"{"title": "fresh"}"#, [("If-Match", try #require(task.header("ETag")))]).status == 200)
        }
    }

    @Test func twoEditorsWithTheSameTagOneWins() async throws {
        try await Self.withReplicas { r in
            for round in 0..<100 {
                let created = try await Self.send(r.a, "POST", "/api/tasks", #"{"title": "race \#(round)"}"#)
                let id = try #require(try created.jsonObject()["id"] as? Int)
                let etag = try #require(created.header("ETag"))
                let ports = round % 2 == 0 ? [r.a, r.b] : [r.b, r.a]
                async let first = Self.send(ports[0], "PUT", "/api/tasks/\(id)", #"{"title": "editor one"}"#, [("If-Match", etag)])
                async let second = round % 4 < 2
                    ? Self.send(ports[1], "PUT", "/api/tasks/\(id)", #"{"title": "editor two"}"#, [("If-Match", etag)])
                    : Self.send(ports[1], "DELETE", "/api/tasks/\(id)", nil, [("If-Match", etag)])
                let statuses = [try await first.status, try await second.status].sorted()
                // The loser's tag is stale (412), or, when a DELETE won, its task is gone (404).
                #expect(statuses == [200, 412] || statuses == [204, 412] || statuses == [204, 404], "round \(round): \(statuses)")
            }
        }
    }

    @Test func oneKeySentToBothReplicasAtOnceMakesOneTask() async throws {
        try await Self.withReplicas { r in
            var statuses: [Int: Int] = [:]
            for round in 0..<50 {
                let key = "race-\(round)-\(UUID().uuidString)"
                let answers = try await withThrowingTaskGroup(of: TestResponse.self) { group in
                    for sender in 0..<20 {
                        group.addTask {
                            try await Self.send(sender % 2 == 0 ? r.a : r.b, "POST", "/api/tasks", #"{"title": "\#(key)"}"#, [("Idempotency-Key", key)])
                        }
                    }
                    return try await group.reduce(into: []) { $0.append($1) }
                }
                for answer in answers { statuses[answer.status, default: 0] += 1 }
                let created = answers.filter { $0.status == 201 }
                #expect(!created.isEmpty)
                #expect(created.filter { $0.header("Idempotent-Replayed") == nil }.count <= 1)
                #expect(Set(created.map(\.body)).count == 1, "every 201 for one key is the same answer")
                #expect(answers.allSatisfy { $0.status == 201 || ($0.status == 409 && $0.header("Retry-After") == "1") })
                #expect(try TestPostgres.psql(r.databaseURL, "SELECT count(*) FROM tasks WHERE title = '\(key)'") == "1", "key \(key)")
            }
            print("idempotency race: answers by status \(statuses.sorted { $0.key < $1.key })")
        }
    }

    @Test func aCreateCommittedButNeverAnsweredIsFoundByItsRetry() async throws {
        let url = try TestPostgres.createDatabase()
        // Create the schema first, directly, so that the proxy's one kill hits the create.
        let direct = try await offCooperativePool { try BinaryTests.launch(databaseURL: url) }
        defer {
            kill(direct.pid, SIGTERM)
            _ = BinaryTests.waitForExit(direct.pid, timeout: 15)
            try? FileManager.default.removeItem(atPath: direct.log)
        }
        let port = Int(try TestPostgres.run(TestPostgres.packageRoot.appendingPathComponent("scripts/pg-cluster.sh").path, ["free-port"]))!
        var components = try #require(URLComponents(string: url))
        let proxy = try PythonProxy(port: port, upstreamHost: components.host ?? "127.0.0.1", upstreamPort: components.port ?? 5432, adminURL: url)
        defer { proxy.stop() }
        components.host = "127.0.0.1"
        components.port = port
        components.queryItems = (components.queryItems ?? []) + [URLQueryItem(name: "sslmode", value: "disable"), URLQueryItem(name: "gssencmode", value: "disable")]
        let proxiedURL = try #require(components.string)
        let proxied = try await offCooperativePool { try BinaryTests.launch(databaseURL: proxiedURL) }
        defer {
            kill(proxied.pid, SIGTERM)
            _ = BinaryTests.waitForExit(proxied.pid, timeout: 15)
            try? FileManager.default.removeItem(atPath: proxied.log)
        }
        let key = [("Idempotency-Key", "lost-answer")]
        let lost = try await Self.send(proxied.port, "POST", "/api/tasks", #"{"title": "exactly once"}"#, key)
        #expect(lost.status == 503, "the answer to a create whose COMMIT reply was lost")
        #expect(try TestPostgres.psql(url, "SELECT count(*) FROM tasks") == "1", "yet the task was committed")
        // The client retries with its key, through either replica: the first answer, no second task.
        let retry = try await Self.send(proxied.port, "POST", "/api/tasks", #"{"title": "exactly once"}"#, key)
        #expect(retry.status == 201)
        #expect(retry.header("Idempotent-Replayed") == "true")
        let other = try await Self.send(direct.port, "POST", "/api/tasks", #"{"title": "exactly once"}"#, key)
        #expect(other.status == 201 && other.body == retry.body)
        #expect(try TestPostgres.psql(url, "SELECT count(*) FROM tasks") == "1")
        #expect(try TestPostgres.psql(url, "SELECT title FROM tasks") == "exactly once")
    }
}

/// `Tests/Faults/pgproxy.py` in `killcommit` mode, between a server and PostgreSQL.
struct PythonProxy {
    let pid: pid_t

    init(port: Int, upstreamHost: String, upstreamPort: Int, adminURL: String) throws {
        let script = TestPostgres.packageRoot.appendingPathComponent("Tests/Faults/pgproxy.py").path
        var environment = ProcessInfo.processInfo.environment
        environment["PGPROXY_ADMIN_URL"] = adminURL
        environment["PATH"] = "\(URL(fileURLWithPath: TestPostgres.psqlPath).deletingLastPathComponent().path):\(environment["PATH"] ?? "/usr/bin:/bin")"
        let arguments: [String] = ["/usr/bin/python3", script, String(port), upstreamHost, String(upstreamPort), "killcommit"]
        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { (argv + envp).forEach { free($0) } }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        // The child starts with default signal handling and nothing blocked, so SIGTERM stops it.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        var termination = sigset_t()
        sigemptyset(&termination)
        sigaddset(&termination, SIGTERM)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setsigdefault(&attributes, &termination)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var pid: pid_t = 0
        guard posix_spawn(&pid, "/usr/bin/python3", &actions, &attributes, argv, envp) == 0 else { throw TestClientError("could not start pgproxy.py") }
        self.pid = pid
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if (try? RawConnection(port: port, timeout: 1)) != nil { return }
            usleep(50_000)
        }
        kill(pid, SIGKILL)
        throw TestClientError("pgproxy.py did not start")
    }

    func stop() {
        kill(pid, SIGTERM)
        if BinaryTests.waitForExit(pid, timeout: 5) == nil {
            kill(pid, SIGKILL)
            _ = BinaryTests.waitForExit(pid, timeout: 5)
        }
    }
}
