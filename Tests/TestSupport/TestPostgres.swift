import Foundation
import Testing

/// Access to the PostgreSQL that the test command started (`DATABASE_URL`), plus private
/// clusters for tests that stop and start PostgreSQL.
public enum TestPostgres {
    /// The test command's database URL; tests that need PostgreSQL fail clearly without it.
    public static var databaseURL: String {
        get throws {
            guard let url = configuredURL else {
                throw TestClientError("DATABASE_URL is not set: run the tests with `make test`")
            }
            return url
        }
    }

    /// Whether the test command gave a database; suites that need one are skipped without it.
    public static var isConfigured: Bool { configuredURL != nil }

    /// `DATABASE_URL`, unless unset or empty.
    private static let configuredURL = ProcessInfo.processInfo.environment["DATABASE_URL"].flatMap { $0.isEmpty ? nil : $0 }

    /// Why database suites are skipped, as the test report shows it.
    public static let skipReason: Comment = "DATABASE_URL is not set: run the whole suite with `make test`, which starts PostgreSQL"

    /// The package root (for scripts/ and the built binary).
    public static let packageRoot: URL = {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }()

    /// Runs SQL with psql against `url`; returns its unaligned output.
    @discardableResult
    public static func psql(_ url: String, _ sql: String) throws -> String {
        try run(psqlPath, ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-tA", "-d", url, "-c", sql])
    }

    /// `url` with its database name replaced.
    public static func url(_ url: String, database: String) -> String {
        var components = URLComponents(string: url)!
        components.path = "/" + database
        return components.string!
    }

    /// Creates a new empty database and returns its URL.
    public static func createDatabase(prefix: String = "tm_test") throws -> String {
        let base = try databaseURL
        let name = "\(prefix)_\(UInt32.random(in: 0...UInt32.max))_\(ProcessInfo.processInfo.processIdentifier)"
        try psql(base, "CREATE DATABASE \(name)")
        return url(base, database: name)
    }

    public static var psqlPath: String {
        let candidates = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql"))?.sorted().reversed() ?? []
        for version in candidates where FileManager.default.isExecutableFile(atPath: "/usr/lib/postgresql/\(version)/bin/psql") {
            return "/usr/lib/postgresql/\(version)/bin/psql"
        }
        return "/usr/bin/psql"
    }

    /// Runs a program to completion (posix_spawn + waitpid: Foundation's `Process` can miss the
    /// exit of a program that leaves a daemon behind); throws with its output when it fails.
    @discardableResult
    public static func run(_ executable: String, _ arguments: [String]) throws -> String {
        let outputPath = NSTemporaryDirectory() + "tm-run-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: outputPath) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, executable, &actions, nil, argv, environ)
        guard spawned == 0 else { throw TestClientError("cannot start \(executable): \(spawned)") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let text = ((try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        let exitCode = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        guard exitCode == 0 else {
            throw TestClientError("\(executable) \(arguments.joined(separator: " ")) failed (\(exitCode)): \(text)")
        }
        return text
    }
}

/// A PostgreSQL cluster of the test's own (scripts/pg-cluster.sh), to stop and start at will
/// without disturbing other tests. Its commands (initdb, pg_ctl) take seconds, so they run on
/// threads of their own: on Swift's cooperative threads they would starve every other test
/// running at the same time.
public final class PrivateCluster: Sendable {
    public let directory: String
    public let port: Int
    public var url: String { "postgresql://postgres@127.0.0.1:\(port)/taskmanagement" }
    private static var script: String { TestPostgres.packageRoot.appendingPathComponent("scripts/pg-cluster.sh").path }

    private init(directory: String, port: Int) {
        self.directory = directory
        self.port = port
    }

    /// Runs `body` with a new, started cluster; stops and deletes it afterwards, whatever happens.
    public static func with<T: Sendable>(_ body: (PrivateCluster) async throws -> T) async throws -> T {
        let cluster = try await offCooperativePool {
            let port = Int(try TestPostgres.run(script, ["free-port"]))!
            return PrivateCluster(directory: NSTemporaryDirectory() + "tm-cluster-\(UUID().uuidString.prefix(8))", port: port)
        }
        do {
            try await cluster.start()
            let result = try await body(cluster)
            await cluster.destroy()
            return result
        } catch {
            await cluster.destroy()
            throw error
        }
    }

    public func start() async throws {
        _ = try await offCooperativePool { try TestPostgres.run(Self.script, ["start", self.directory, String(self.port)]) }
    }

    public func stop() async throws {
        _ = try await offCooperativePool { try TestPostgres.run(Self.script, ["stop", self.directory]) }
    }

    private func destroy() async {
        try? await stop()
        try? FileManager.default.removeItem(atPath: directory)
    }
}
