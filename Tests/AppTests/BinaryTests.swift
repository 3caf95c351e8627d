import Foundation
import Testing
import TestSupport

/// The real `task-management` binary as operators run it: signals, exit status, outages.
@Suite("The server binary", .enabled(if: TestPostgres.isConfigured, TestPostgres.skipReason))
struct BinaryTests {
    /// The debug binary that `swift build` (run by `make test`) leaves next to the tests.
    static var binary: String {
        get throws {
            let path = TestPostgres.packageRoot.appendingPathComponent(".build/debug/task-management").path
            guard FileManager.default.isExecutableFile(atPath: path) else {
                throw TestClientError("\(path) is missing: run `swift build` first (make test does)")
            }
            return path
        }
    }

    /// Starts the binary on a free port; returns its pid and port.
    static func launch(databaseURL: String, extra: [String: String] = [:]) throws -> (pid: pid_t, port: Int, log: String) {
        let port = Int(try TestPostgres.run(TestPostgres.packageRoot.appendingPathComponent("scripts/pg-cluster.sh").path, ["free-port"]))!
        let log = NSTemporaryDirectory() + "tm-binary-\(UUID().uuidString).log"
        var environment = ProcessInfo.processInfo.environment
        environment.merge(["DATABASE_URL": databaseURL, "HOST": "127.0.0.1", "PORT": String(port), "LOG_LEVEL": "info", "SHUTDOWN_GRACE_S": "10"]) { $1 }
        environment.merge(extra) { $1 }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let path = try binary
        let argv = [strdup(path), nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { (argv + envp).forEach { free($0) } }
        var pid: pid_t = 0
        guard posix_spawn(&pid, path, &actions, nil, argv, envp) == 0 else { throw TestClientError("spawn failed") }
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if (try? RawConnection(port: port, timeout: 1)) != nil { return (pid, port, log) }
            usleep(50_000)
        }
        kill(pid, SIGKILL)
        let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        try? FileManager.default.removeItem(atPath: log)
        throw TestClientError("the server did not start: \(output)")
    }

    /// Waits for `pid` to exit; returns its exit status, or nil after `timeout`.
    static func waitForExit(_ pid: pid_t, timeout: TimeInterval) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        var status: Int32 = 0
        while Date() < deadline {
            if waitpid(pid, &status, WNOHANG) == pid { return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f) }
            usleep(20_000)
        }
        return nil
    }

    @Test func sigtermUnderLoadLosesNoAcceptedRequestAndExitsZero() async throws {
        let url = try TestPostgres.createDatabase()
        let (pid, port, log) = try await offCooperativePool { try Self.launch(databaseURL: url) }
        defer { try? FileManager.default.removeItem(atPath: log) }
        // Eight clients stream creates over keep-alive connections until the server closes.
        let clients = (0..<8).map { client in
            Task {
                try await offCooperativePool { () -> (ok: Int, bad: Int) in
                    var ok = 0, bad = 0
                    while true {
                        guard let connection = try? RawConnection(port: port, timeout: 15) else { return (ok, bad) }
                        while true {
                            let body = "{\"title\": \"c\(client)\"}"
                            do {
                                try connection.send("POST /api/tasks HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
                            } catch { break }
                            guard let response = try? connection.readResponse() else { break }
                            if response.status == 201 { ok += 1 } else { bad += 1 }
                            if response.header("Connection") == "close" { break }
                        }
                    }
                }
            }
        }
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline, (Int(try TestPostgres.psql(url, "SELECT count(*) FROM tasks")) ?? 0) < 50 {
            try await Task.sleep(for: .milliseconds(50))
        }
        kill(pid, SIGTERM)
        let status = try await offCooperativePool { Self.waitForExit(pid, timeout: 15) }
        var acknowledged = 0
        for client in clients {
            let (ok, bad) = try await client.value
            acknowledged += ok
            #expect(bad == 0)
        }
        #expect(status == 0)
        #expect(acknowledged > 0)
        // Every acknowledged create is in the database: nothing acknowledged and then lost.
        #expect(Int(try TestPostgres.psql(url, "SELECT count(*) FROM tasks")) == acknowledged)
    }

    @Test func postgresOutageGives503ThenRecovers() async throws {
        try await PrivateCluster.with { cluster in
            let (pid, port, log) = try await offCooperativePool { try Self.launch(databaseURL: cluster.url, extra: ["DB_ACQUIRE_TIMEOUT_MS": "1000"]) }
            defer { kill(pid, SIGKILL); _ = Self.waitForExit(pid, timeout: 5); try? FileManager.default.removeItem(atPath: log) }
            #expect(try await httpRequest(port: port, "GET", "/api/tasks").status == 200)

            try await cluster.stop()
            try await Task.sleep(for: .milliseconds(300))
            let start = ContinuousClock.now
            let down = try await httpRequest(port: port, "GET", "/api/tasks")
            #expect(down.status == 503)
            #expect(down.header("Retry-After") != nil)
            #expect(ContinuousClock.now - start < .seconds(2))
            #expect(try await httpRequest(port: port, "GET", "/readyz").status == 503)
            #expect(try await httpRequest(port: port, "GET", "/healthz").status == 200)
            // Every request fails alike while PostgreSQL is down: the log gets a line a second
            // with a count, not a line per request.
            for _ in 0..<50 { #expect(try await httpRequest(port: port, "GET", "/api/tasks/1").status == 503) }
            try await Task.sleep(for: .milliseconds(1100))
            #expect(try await httpRequest(port: port, "GET", "/api/tasks/1").status == 503)
            let warnings = ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
                .split(separator: "\n").filter { $0.contains("database unavailable") }
            #expect((2...4).contains(warnings.count), "\(warnings.count) warnings for 52 failed requests")
            #expect(warnings.contains { !$0.contains("suppressed=0") }, "no warning counts the ones held back")

            try await cluster.start()
            var recovered = false
            for _ in 0..<100 where !recovered {
                recovered = try await httpRequest(port: port, "GET", "/api/tasks").status == 200
                if !recovered { try await Task.sleep(for: .milliseconds(100)) }
            }
            // The pool's gauges are current when scraped: connections open again, none in use.
            let metrics = try await httpRequest(port: port, "GET", "/metrics").text
            func gauge(_ name: String) -> Double? {
                metrics.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap { Double($0.split(separator: " ").last!) }
            }
            #expect((gauge("db_pool_connections_open") ?? 0) >= 1)
            #expect(gauge("db_pool_connections_in_use") == 0)
            #expect(metrics.contains("db_errors_total{"))
            #expect(recovered)
            #expect(try await httpRequest(port: port, "GET", "/readyz").status == 200)
        }
    }

    @Test func aBadVariableStopsTheStartWithOneLine() throws {
        let output = NSTemporaryDirectory() + "tm-bad-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: output) }
        let script = "PORT=notaport DATABASE_URL=postgresql://x@127.0.0.1/db '\(try Self.binary)' > '\(output)' 2>&1; echo $?"
        let status = try TestPostgres.run("/bin/sh", ["-c", script])
        let text = try String(contentsOfFile: output, encoding: .utf8)
        #expect(status == "2")
        #expect(text.contains("PORT"))
        #expect(text.split(separator: "\n").count == 1)
    }
}
