import Foundation
import Logging
import Testing
import TestSupport
@testable import Database
import EventLoopCore

private func makePool(_ url: String, size: Int = 4, acquireTimeout: Duration = .seconds(2), name: String = "tm-test") -> ConnectionPool {
    ConnectionPool(
        configuration: PoolConfiguration(conninfo: url, applicationName: name, maxConnections: size, acquireTimeout: acquireTimeout, connectTimeout: .seconds(2)),
        logger: Logger(label: "test")
    )
}

private let selectOne = PreparedStatement(name: "select_one", sql: "SELECT $1::int4 + 1 AS n")

/// Polls `condition` until it holds or `timeout` passes.
private func eventually(_ timeout: Duration = .seconds(5), _ condition: () async -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if await condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return await condition()
}

@Suite("PostgreSQL through the pool (real database)", .enabled(if: TestPostgres.isConfigured, TestPostgres.skipReason))
struct PostgresIntegrationTests {
    @Test func aQueryReachesPostgreSQL() async throws {
        let pool = makePool(try TestPostgres.databaseURL)
        await pool.start()
        let rows = try await pool.withConnection { try await $0.query(selectOne, [.int(41)]) }
        #expect(try rows.first?.int("n") == 42)
        await pool.shutdown(gracePeriod: .seconds(1))
    }

    @Test func typedRoundTrips() async throws {
        let pool = makePool(try TestPostgres.createDatabase())
        await pool.start()
        try await pool.withConnection { connection in
            _ = try await connection.simpleQuery("CREATE TYPE mood AS ENUM ('happy', 'sad')")
            _ = try await connection.simpleQuery("CREATE TABLE t (i4 int4, i8 int8, s text, v varchar(10), b bool, tz timestamptz, ts timestamp, m mood)")
            let insert = PreparedStatement(name: "ins", sql: "INSERT INTO t VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *")
            let stamp = PostgresTimestamp(microsecondsSinceEpoch: 1_704_110_400_123_456)
            let row = try #require(try await connection.query(insert, [
                .int(2_147_483_647), .int(9_000_000_000), .text("Ünïcödé 😀 'quote' \\ \"x\""), .text("varchar"),
                .bool(true), .text("2024-01-01 12:00:00.123456+00"), .text("2024-01-01 12:00:00.123456"), .text("sad"),
            ]).first)
            #expect(try row.int("i4") == 2_147_483_647)
            #expect(try row.int("i8") == 9_000_000_000)
            #expect(try row.string("s") == "Ünïcödé 😀 'quote' \\ \"x\"")
            #expect(try row.string("v") == "varchar")
            #expect(try row.bool("b"))
            #expect(try row.timestamp("tz") == stamp)
            #expect(try row.timestamp("ts") == stamp)
            #expect(try row.string("m") == "sad")

            let nulls = try #require(try await connection.query(insert, [.null, .null, .null, .null, .null, .null, .null, .null]).first)
            #expect(try nulls.optionalString("s") == nil)
            #expect(try nulls.isNull(0))
            #expect(throws: PostgresError.self) { try nulls.int("i4") }
        }
        await pool.shutdown(gracePeriod: .seconds(1))
    }

    @Test func binaryResultsDecodeAsTextResultsDo() async throws {
        let pool = makePool(try TestPostgres.databaseURL)
        await pool.start()
        let sql = """
            SELECT $1::int2 AS i2, $2::int4 AS i4, $3::int8 AS i8, $4::bool AS b, $5::text AS s,
                   $6::timestamptz AS tz, $6::timestamp AS ts, NULL::int4 AS n, 'x'::varchar AS v
            """
        let text = PreparedStatement(name: "types_text", sql: sql)
        let binary = PreparedStatement(name: "types_binary", sql: sql, binaryResults: true)
        let stamps: [(text: String, micros: Int64)] = [
            ("1970-01-01 00:00:00+00", 0), ("2000-01-01 00:00:00+00", 946_684_800_000_000),
            ("1999-12-31 23:59:59.999999+00", 946_684_799_999_999), ("1969-12-31 23:59:59.999999+00", -1),
            ("2024-01-01 12:00:00.123456+00", 1_704_110_400_123_456), ("2024-01-01 12:00:00+00", 1_704_110_400_000_000),
            ("1899-12-31 23:59:59.999999+00", -2_208_988_800_000_001),
        ]
        for (index, (literal, micros)) in stamps.enumerated() {
            let stamp = PostgresTimestamp(microsecondsSinceEpoch: micros)
            let sign = index % 2 == 0 ? 1 : -1
            let binds: [PostgresValue] = [.int(sign * 32_767), .int(sign * 2_147_483_647), .int(sign * 9_000_000_000_000), .bool(index % 2 == 0), .text("é \(index)"), .text(literal)]
            let fromText = try #require(try await pool.query(text, binds).first)
            let fromBinary = try #require(try await pool.query(binary, binds).first)
            for column in ["i2", "i4", "i8"] { #expect(try fromBinary.int(column) == fromText.int(column)) }
            #expect(try fromBinary.int("i8") == sign * 9_000_000_000_000)
            #expect(try fromBinary.bool("b") == fromText.bool("b"))
            #expect(try fromBinary.string("s") == fromText.string("s"))
            #expect(try fromBinary.string("i4") == fromText.string("i4"))
            #expect(try fromBinary.string("v") == "x")
            #expect(try fromBinary.timestamp("tz") == stamp)
            #expect(try fromBinary.timestamp("ts") == stamp)
            #expect(try fromText.timestamp("tz") == stamp)
            #expect(try fromText.timestamp("ts") == stamp)
            #expect(try fromBinary.isNull(7))
            #expect(throws: PostgresError.self) { try fromBinary.string("tz") }
        }
        let infinite = try #require(try await pool.query(PreparedStatement(name: "inf", sql: "SELECT 'infinity'::timestamptz", binaryResults: true)).first)
        #expect(throws: PostgresError.self) { try infinite.timestamp(0) }
        // Outside years 1–9999 (what an ISO 8601 date without a sign can say): an error in both
        // formats, as 'infinity' is, never digits of a wrong date.
        let outside = "SELECT '0044-03-15 12:00:00+00 BC'::timestamptz AS bc, '10000-01-01 00:00:00+00'::timestamptz AS far"
        for binaryResults in [false, true] {
            let row = try #require(try await pool.query(PreparedStatement(name: "outside_\(binaryResults)", sql: outside, binaryResults: binaryResults)).first)
            for column in [0, 1] {
                #expect(throws: PostgresError.self, "column \(column), binary \(binaryResults)") { try row.timestamp(column) }
            }
        }
        await pool.shutdown(gracePeriod: .seconds(1))
    }

    @Test func aNULByteIsATypedError() async throws {
        let pool = makePool(try TestPostgres.databaseURL)
        await pool.start()
        let error = await #expect(throws: PostgresError.self) {
            try await pool.withConnection { try await $0.query(PreparedStatement(name: "echo", sql: "SELECT $1::text"), [.text("a\u{0}b")]) }
        }
        #expect(error?.kind == .invalidValue)
        #expect(await pool.statistics.inUse == 0)
        await pool.shutdown(gracePeriod: .seconds(1))
    }

    @Test func serverErrorsCarrySQLState() async throws {
        let pool = makePool(try TestPostgres.createDatabase())
        await pool.start()
        try await pool.withConnection { connection in
            _ = try await connection.simpleQuery("CREATE TABLE u (id int PRIMARY KEY, name varchar(3))")
            let insert = PreparedStatement(name: "ins_u", sql: "INSERT INTO u VALUES ($1, $2)")
            _ = try await connection.query(insert, [.int(1), .text("a")])
            let duplicate = await #expect(throws: PostgresError.self) { try await connection.query(insert, [.int(1), .text("b")]) }
            #expect(duplicate?.sqlState == "23505")
            #expect(duplicate?.kind == .server)
            let tooLong = await #expect(throws: PostgresError.self) { try await connection.query(insert, [.int(2), .text("abcd")]) }
            #expect(tooLong?.isDataError == true)
            #expect(tooLong?.sqlState == "22001")
            // The connection stays usable after errors.
            #expect(try await connection.query(selectOne, [.int(1)]).first?.int(0) == 2)
        }
        await pool.shutdown(gracePeriod: .seconds(1))
    }

    @Test func commitAndRollback() async throws {
        let pool = makePool(try TestPostgres.createDatabase())
        await pool.start()
        _ = try await pool.withConnection { try await $0.simpleQuery("CREATE TABLE c (n int)") }
        let insert = PreparedStatement(name: "ins_c", sql: "INSERT INTO c VALUES ($1)")
        try await pool.withTransaction { _ = try await $0.query(insert, [.int(1)]) }
        struct Abort: Error {}
        await #expect(throws: Abort.self) {
            try await pool.withTransaction { connection in
                _ = try await connection.query(insert, [.int(2)])
                throw Abort()
            }
        }
        let values = try await pool.withConnection { try await $0.simpleQuery("SELECT n FROM c ORDER BY n") }
        #expect(try values.rows.map { try $0.int(0) } == [1])
        await pool.shutdown(gracePeriod: .seconds(1))
    }

    @Test func fiveHundredConcurrentQueriesNeverOpenMoreThanThePoolSize() async throws {
        let url = try TestPostgres.databaseURL
        let name = "tm-bound-\(UInt16.random(in: 0...UInt16.max))"
        let pool = makePool(url, size: 4, acquireTimeout: .seconds(10), name: name)
        await pool.start()
        let slow = PreparedStatement(name: "slow", sql: "SELECT pg_sleep(0.002), $1::int4 AS n")
        let observer = Task {
            var most = 0
            while !Task.isCancelled {
                let count = Int((try? TestPostgres.psql(url, "SELECT count(*) FROM pg_stat_activity WHERE application_name = '\(name)'")) ?? "0") ?? 0
                most = max(most, count)
                try? await Task.sleep(for: .milliseconds(20))
            }
            return most
        }
        let results = try await withThrowingTaskGroup(of: Int.self) { group in
            for index in 0..<500 {
                group.addTask { try await pool.withConnection { try await $0.query(slow, [.int(index)]) }.first!.int("n") }
            }
            return try await group.reduce(into: Set<Int>()) { $0.insert($1) }
        }
        observer.cancel()
        let most = await observer.value
        #expect(results.count == 500)
        #expect(most >= 1)
        #expect(most <= 4)
        let statistics = await pool.statistics
        #expect(statistics.open <= 4)
        #expect(statistics.inUse == 0)
        #expect(statistics.waiting == 0)
        await pool.shutdown(gracePeriod: .seconds(1))
    }

    @Test func pipelinedQueriesShareConnectionsAndKeepTheirOwnResults() async throws {
        let url = try TestPostgres.databaseURL
        let name = "tm-pipe-\(UInt16.random(in: 0...UInt16.max))"
        let pool = ConnectionPool(
            configuration: PoolConfiguration(conninfo: url, applicationName: name, maxConnections: 2, acquireTimeout: .seconds(10), pipelineDepth: 8),
            logger: Logger(label: "test")
        )
        await pool.start()
        let echo = PreparedStatement(name: "pipe_echo", sql: "SELECT $1::int4 * 2 AS n")
        let fails = PreparedStatement(name: "pipe_fail", sql: "SELECT 1 / $1::int4 AS n")
        let outcomes = try await withThrowingTaskGroup(of: (Int, Int?).self) { group in
            for index in 0..<400 {
                group.addTask {
                    if index.isMultiple(of: 10) {
                        // Division by zero in the middle of the pipeline fails only this query.
                        let value = try? await pool.query(fails, [.int(0)]).first?.int("n")
                        return (index, value)
                    }
                    return (index, try await pool.query(echo, [.int(index)]).first!.int("n"))
                }
            }
            return try await group.reduce(into: [Int: Int?]()) { $0.updateValue($1.1, forKey: $1.0) }
        }
        for index in 0..<400 {
            #expect(outcomes[index]! == (index.isMultiple(of: 10) ? nil : index * 2))
        }
        let connections = try TestPostgres.psql(url, "SELECT count(*) FROM pg_stat_activity WHERE application_name = '\(name)'")
        #expect(Int(connections)! <= 2)
        let statistics = await pool.statistics
        #expect(statistics.inUse == 0 && statistics.waiting == 0)
        await pool.shutdown(gracePeriod: .seconds(1))
    }

    @Test func aQueryFromALoopUsesThatLoopsConnectionAndResumesOnItsThread() async throws {
        let loops = EventLoopGroup(count: 2, namePrefix: "test-loop")
        let pool = ConnectionPool(
            configuration: PoolConfiguration(
                conninfo: try TestPostgres.databaseURL, maxConnections: 2, minConnections: 2, connectTimeout: .seconds(2)
            ),
            logger: Logger(label: "test"), eventLoops: loops
        )
        await pool.start()
        #expect(await eventually { await pool.statistics.open == 2 })
        let backendPID = PreparedStatement(name: "backend_pid", sql: "SELECT pg_backend_pid() AS pid")
        var pidsByLoop: [Set<Int>] = []
        for loop in loops.loops {
            let (pids, alwaysOnLoop) = try await Task(executorPreference: loop) {
                var pids = Set<Int>()
                var alwaysOnLoop = loop.isInLoopThread
                for _ in 0..<20 {
                    pids.insert(try await pool.query(backendPID).first!.int("pid"))
                    alwaysOnLoop = alwaysOnLoop && loop.isInLoopThread
                }
                return (pids, alwaysOnLoop)
            }.value
            #expect(alwaysOnLoop, "the task left its loop's thread")
            pidsByLoop.append(pids)
        }
        // Each loop kept to its own connection: one backend each, and not the same one.
        #expect(pidsByLoop.map(\.count) == [1, 1])
        #expect(pidsByLoop[0].isDisjoint(with: pidsByLoop[1]))
        await pool.shutdown(gracePeriod: .seconds(1))
        await loops.stop()
    }

    @Test func readsIssuedTogetherShareASyncWithoutHarmingEachOtherOrWrites() async throws {
        let url = try TestPostgres.databaseURL
        let table = "batch_\(UInt32.random(in: 0...UInt32.max))"
        _ = try TestPostgres.psql(url, "CREATE TABLE \(table) (n int PRIMARY KEY)")
        let loops = EventLoopGroup(count: 1, namePrefix: "test-loop")
        let pool = ConnectionPool(
            configuration: PoolConfiguration(conninfo: url, maxConnections: 1, connectTimeout: .seconds(2), pipelineDepth: 64),
            logger: Logger(label: "test"), eventLoops: loops
        )
        await pool.start()
        let read = PreparedStatement(name: "batch_read", sql: "SELECT 100 / $1::int4 AS n", readOnly: true)
        let write = PreparedStatement(name: "batch_write_\(table)", sql: "INSERT INTO \(table) VALUES ($1) RETURNING n")
        // Warm up: both statements prepared, so the next round is only executions.
        _ = try await pool.query(read, [.int(1)])
        _ = try await pool.query(write, [.int(-1)])
        // All 60 tasks start in one turn of the pool's only loop: the reads go out behind one
        // sync, some of them failing (division by zero) in the middle of the batch.
        let outcomes = try await withThrowingTaskGroup(of: (Int, Result<Int, PostgresError>).self) { group in
            for index in 0..<60 {
                group.addTask(executorPreference: loops.loops[0]) {
                    do {
                        if index.isMultiple(of: 3) {
                            return (index, .success(try await pool.query(write, [.int(index)]).first!.int("n")))
                        }
                        let divisor = index.isMultiple(of: 7) ? 0 : index
                        return (index, .success(try await pool.query(read, [.int(divisor)]).first!.int("n")))
                    } catch let error as PostgresError {
                        return (index, .failure(error))
                    }
                }
            }
            return try await group.reduce(into: [Int: Result<Int, PostgresError>]()) { $0[$1.0] = $1.1 }
        }
        for index in 0..<60 {
            switch (index.isMultiple(of: 3), index.isMultiple(of: 7), outcomes[index]!) {
            case (true, _, .success(let n)): #expect(n == index)
            case (false, false, .success(let n)): #expect(n == 100 / index)
            case (false, true, .failure(let error)): #expect(error.sqlState == "22012", "read \(index): \(error)")
            case (_, _, let outcome): Issue.record("request \(index): unexpected \(outcome)")
            }
        }
        // Every acknowledged write is committed.
        let stored = try TestPostgres.psql(url, "SELECT string_agg(n::text, ',' ORDER BY n) FROM \(table) WHERE n >= 0")
        #expect(stored == stride(from: 0, to: 60, by: 3).map(String.init).joined(separator: ","))
        await pool.shutdown(gracePeriod: .seconds(1))
        await loops.stop()
        _ = try TestPostgres.psql(url, "DROP TABLE \(table)")
    }

    @Test func oneRowReadsOfOneLoopTurnShareAConnectionWhileLargerReadsSpread() async throws {
        let loops = EventLoopGroup(count: 1, namePrefix: "test-loop")
        let pool = ConnectionPool(
            configuration: PoolConfiguration(
                conninfo: try TestPostgres.databaseURL, maxConnections: 4, minConnections: 4, connectTimeout: .seconds(2), pipelineDepth: 16
            ),
            logger: Logger(label: "test"), eventLoops: loops
        )
        await pool.start()
        #expect(await eventually { await pool.statistics.open == 4 })
        let loop = loops.loops[0]
        /// The backends that served 12 reads started in one callback of the loop (one turn).
        func backends(_ statement: PreparedStatement) async throws -> Set<Int> {
            _ = try await pool.query(statement)  // prepared on one connection...
            let tasks = await withCheckedContinuation { continuation in
                loop.execute {
                    continuation.resume(returning: (0..<12).map { _ in
                        Task.immediate(executorPreference: loop) { try await pool.query(statement).first!.int("pid") }
                    })
                }
            }
            var pids = Set<Int>()
            for task in tasks { pids.insert(try await task.value) }
            return pids
        }
        let oneRow = PreparedStatement(name: "pid_one_row", sql: "SELECT pg_backend_pid() AS pid", readOnly: true, atMostOneRow: true)
        let anyRows = PreparedStatement(name: "pid_any_rows", sql: "SELECT pg_backend_pid() AS pid", readOnly: true)
        #expect(try await backends(oneRow).count == 1)
        #expect(try await backends(anyRows).count == 4)
        await pool.shutdown(gracePeriod: .seconds(1))
        await loops.stop()
    }

    @Test func theAcquireTimeoutFiresUnderSaturation() async throws {
        let pool = makePool(try TestPostgres.databaseURL, size: 1, acquireTimeout: .milliseconds(200))
        await pool.start()
        // The holder's own lease must not be the one that times out while the connection opens.
        #expect(await eventually { await pool.statistics.open == 1 })
        let holder = Task { try await pool.withConnection { _ = try await $0.simpleQuery("SELECT pg_sleep(1)") } }
        #expect(await eventually { await pool.statistics.inUse == 1 })
        let start = ContinuousClock.now
        let error = await #expect(throws: PostgresError.self) { try await pool.withConnection { _ in 1 } }
        #expect(error?.kind == .poolTimeout)
        let waited = ContinuousClock.now - start
        #expect(waited >= .milliseconds(150) && waited < .milliseconds(900))
        try await holder.value
        #expect(try await pool.withConnection { try await $0.query(selectOne, [.int(1)]) }.first?.int(0) == 2)
        #expect(await pool.statistics.inUse == 0)
        await pool.shutdown(gracePeriod: .seconds(1))
    }

    @Test func cancellingAWaiterRemovesIt() async throws {
        let pool = makePool(try TestPostgres.databaseURL, size: 1, acquireTimeout: .seconds(10))
        await pool.start()
        let holder = Task { try await pool.withConnection { _ = try await $0.simpleQuery("SELECT pg_sleep(0.5)") } }
        #expect(await eventually { await pool.statistics.inUse == 1 })
        let waiter = Task { try await pool.withConnection { _ in 1 } }
        #expect(await eventually { await pool.statistics.waiting == 1 })
        waiter.cancel()
        await #expect(throws: CancellationError.self) { try await waiter.value }
        #expect(await pool.statistics.waiting == 0)
        try await holder.value
        await pool.shutdown(gracePeriod: .seconds(1))
    }

    @Test func aConnectionKilledWhileLeasedIsReplaced() async throws {
        let url = try TestPostgres.databaseURL
        let pool = makePool(url, size: 1)
        await pool.start()
        let error = await #expect(throws: PostgresError.self) {
            try await pool.withConnection { connection in
                let pid = try await connection.simpleQuery("SELECT pg_backend_pid()").first!.int(0)
                try TestPostgres.psql(url, "SELECT pg_terminate_backend(\(pid))")
                _ = try await connection.query(selectOne, [.int(1)])
            }
        }
        #expect(error?.kind == .connectionLost)
        #expect(try await pool.withConnection { try await $0.query(selectOne, [.int(5)]) }.first?.int(0) == 6)
        let statistics = await pool.statistics
        #expect(statistics.inUse == 0 && statistics.open == 1)
        await pool.shutdown(gracePeriod: .seconds(1))
    }

    @Test func anIdleConnectionKilledIsNoticedAndReplaced() async throws {
        let url = try TestPostgres.databaseURL
        let name = "tm-idle-\(UInt16.random(in: 0...UInt16.max))"
        let pool = makePool(url, size: 1, name: name)
        await pool.start()
        _ = try await pool.withConnection { try await $0.query(selectOne, [.int(1)]) }
        try TestPostgres.psql(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '\(name)'")
        #expect(await eventually { await pool.statistics.open == 1 && (try? TestPostgres.psql(url, "SELECT count(*) FROM pg_stat_activity WHERE application_name = '\(name)'")) == "1" })
        #expect(try await pool.withConnection { try await $0.query(selectOne, [.int(1)]) }.first?.int(0) == 2)
        await pool.shutdown(gracePeriod: .seconds(1))
    }
}

@Suite("PostgreSQL stopping and starting (private cluster)", .enabled(if: TestPostgres.isConfigured, TestPostgres.skipReason))
struct PostgresRestartTests {
    @Test func failsFastWhileDownAndRecoversWithoutRestart() async throws {
        try await PrivateCluster.with { cluster in
            let pool = ConnectionPool(
                configuration: PoolConfiguration(
                    conninfo: cluster.url, maxConnections: 2, acquireTimeout: .seconds(2), connectTimeout: .seconds(1),
                    initialBackoff: .milliseconds(50), maxBackoff: .milliseconds(500)
                ),
                logger: Logger(label: "test")
            )
            await pool.start()
            #expect(try await pool.withConnection { try await $0.query(selectOne, [.int(1)]) }.first?.int(0) == 2)

            try await cluster.stop()
            // While it is down: typed errors, each well under the acquire timeout.
            var kinds: Set<PostgresError.Kind> = []
            for _ in 0..<20 {
                let start = ContinuousClock.now
                do {
                    _ = try await pool.withConnection { try await $0.query(selectOne, [.int(1)]) }
                } catch let error as PostgresError {
                    kinds.insert(error.kind)
                }
                #expect(ContinuousClock.now - start < .milliseconds(1500))
                try await Task.sleep(for: .milliseconds(25))
            }
            #expect(!kinds.isEmpty)
            #expect(kinds.isSubset(of: [.unavailable, .connectionLost, .connectFailed]))
            #expect(await pool.statistics.reachable == false)

            try await cluster.start()
            let recovered = await eventually(.seconds(10)) {
                (try? await pool.withConnection { try await $0.query(selectOne, [.int(2)]) }.first?.int(0)) == 3
            }
            #expect(recovered)
            let statistics = await pool.statistics
            #expect(statistics.reachable)
            #expect(statistics.inUse == 0 && statistics.waiting == 0)
            await pool.shutdown(gracePeriod: .seconds(1))
        }
    }

}

@Suite("Timestamps from PostgreSQL text (no database)")
struct TimestampTextTests {
    /// PostgreSQL's output for an instant in a UTC session: fraction trimmed of trailing zeros
    /// and left out when zero, then "+00" for timestamptz or nothing for timestamp.
    private func postgresText(_ micros: Int64, withOffset: Bool) -> String {
        let seconds = Int(micros.quotientAndRemainder(dividingBy: 1_000_000).quotient) - (micros % 1_000_000 < 0 ? 1 : 0)
        let fraction = Int(micros - Int64(seconds) * 1_000_000)
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let parts = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: Date(timeIntervalSince1970: TimeInterval(seconds)))
        var text = String(format: "%04d-%02d-%02d %02d:%02d:%02d", parts.year!, parts.month!, parts.day!, parts.hour!, parts.minute!, parts.second!)
        if fraction != 0 {
            var digits = String(format: ".%06d", fraction)
            while digits.hasSuffix("0") { digits.removeLast() }
            text += digits
        }
        return text + (withOffset ? "+00" : "")
    }

    @Test func parsingReadsWhatPostgreSQLPrints() {
        var generator = SystemRandomNumberGenerator()
        var samples: [Int64] = [0, 1, 999_999, 1_000_000, 10, 100_000, 1_700_000_000_000_000, 253_402_300_799_999_999]
        for _ in 0..<5000 { samples.append(Int64.random(in: 0...253_402_300_799_999_999, using: &generator)) }
        for micros in samples {
            for withOffset in [true, false] {
                let text = postgresText(micros, withOffset: withOffset)
                #expect(PostgresTimestamp(postgresText: text)?.microsecondsSinceEpoch == micros, "\(text)")
            }
        }
    }

    @Test func otherOffsetsAndShapes() {
        let shifted: Int64 = 1_704_110_400_000_000 - 19_800_000_000
        #expect(PostgresTimestamp(postgresText: "2024-01-01 12:00:00+05:30")?.microsecondsSinceEpoch == shifted)
        #expect(PostgresTimestamp(postgresText: "2024-01-01 12:00:00.5")?.microsecondsSinceEpoch == 1_704_110_400_500_000)
        for text in ["infinity", "-infinity", "12024-01-01 12:00:00+00", "2024-01-01 12:00:00.+00", "2024-01-01 12:00"] {
            #expect(PostgresTimestamp(postgresText: text) == nil, "\(text)")
        }
    }
}
