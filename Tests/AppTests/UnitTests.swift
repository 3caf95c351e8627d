import Database
import Server
import Testing
@testable import App

@Suite("JSON parser, validation and configuration (pure)")
struct UnitTests {
    @Test func jsonParserIsStrict() throws {
        #expect(try JSONParser.parse(Array(#"{"a": [1, -2.5e3, true, null, "x\u00e9\ud83d\ude00"], "a": 2}"#.utf8)) == .object(["a": .number("2")]))
        #expect(try JSONParser.parse(Array("\u{FEFF}{}".utf8)) == .object([:]))
        for bad in ["", "{", "{\"a\":}", "[1,]", "NaN", "01", "{'a':1}", "\"\u{01}\"", "\"\\ud800\"", "\"\\x\"", "{} x", String(repeating: "[", count: 1000)] {
            #expect(throws: JSONSyntaxError.self, "\(bad)") { try JSONParser.parse(Array(bad.utf8)) }
        }
        #expect(throws: JSONSyntaxError.self) { try JSONParser.parse([0x22, 0xFF, 0x22]) }
    }

    /// Every statement says what its result must look like, so no answer meant for another
    /// statement is ever decoded as its own; names are unique (one prepared statement each).
    @Test func everyStatementDeclaresItsResultShape() {
        // Every order (by id, or a field either way), filtered or not: a list and a cursor each.
        #expect(Statements.all.count == 20 + 4 * (1 + 2 * TaskSortField.allCases.count))
        #expect(Statements.fetchTaskList(rows: 500).shape != nil)
        #expect(Statements.all.allSatisfy { $0.shape != nil })
        #expect(Set(Statements.all.map(\.name)).count == Statements.all.count)
    }

    @Test func mediaTypes() {
        #expect(RequestValidation.isJSONMediaType("application/json"))
        #expect(RequestValidation.isJSONMediaType("Application/JSON; charset=utf-8"))
        #expect(RequestValidation.isJSONMediaType("application/merge-patch+json"))
        #expect(!RequestValidation.isJSONMediaType("text/plain"))
        #expect(!RequestValidation.isJSONMediaType("text/json+x"))
    }

    @Test func configurationDefaultsAndErrors() throws {
        let configuration = try AppConfiguration(environment: ["DATABASE_URL": "postgresql://u@h/db"], cpus: 2)
        #expect(configuration.port == 5555)
        #expect(configuration.host == "0.0.0.0")
        #expect(configuration.poolSize == 8)
        #expect(configuration.acquireTimeout == .milliseconds(2000))
        #expect(configuration.maxBodyBytes == 1_048_576)
        #expect(configuration.maxHeaderBytes == 16_384)
        #expect(configuration.httpTimeout == .seconds(30))
        #expect(configuration.maxPendingInputBytes == 65_536)
        #expect(configuration.readBufferBytes == 65_536)
        #expect(configuration.maxPendingOutputBytes == 262_144)
        #expect(configuration.shutdownGrace == .seconds(25))
        #expect(configuration.corsOrigins == AppConfiguration.defaultCORSOrigins)
        #expect(configuration.logLevel == .info)
        #expect(!configuration.transactionPooling && configuration.listenURL == "postgresql://u@h/db")
        #expect(configuration.maxWaiters >= configuration.maxConnections && configuration.maxWaiters >= 4096)
        #expect(configuration.listMaxStreams == 6 && configuration.listBufferedRows == 1000 && configuration.listFetchRows == 500)
        #expect(configuration.eventLimits.heartbeat == .seconds(15) && configuration.lookupPipelineDepth == 16)
        let pooled = try AppConfiguration(environment: ["DATABASE_URL": "postgresql://u@h/db", "DB_PGBOUNCER": "Transaction", "HTTP_TIMEOUT_S": "4", "DB_QUERY_TIMEOUT_MS": "3000"])
        #expect(pooled.transactionPooling && pooled.listenURL == nil, "a transaction pooler carries no LISTEN")
        #expect(pooled.eventLimits.heartbeat == .seconds(2), "half a short HTTP timeout")
        let listening = try AppConfiguration(environment: ["DATABASE_URL": "postgresql://u@h/db", "DB_PGBOUNCER": "transaction", "DB_LISTEN_URL": "postgresql://u@direct/db"])
        #expect(listening.listenURL == "postgresql://u@direct/db")

        let bad: [(String, String)] = [
            ("DB_PGBOUNCER", "yes"), ("SSE_HEARTBEAT_S", "30"), ("SSE_HEARTBEAT_S", "0"), ("LIST_BUFFERED_ROWS", "0"),
            ("LIST_FETCH_ROWS", "x"), ("DB_LISTEN_URL", "nonsense=1"), ("DB_LOOKUP_PIPELINE_DEPTH", "0"),
            ("PORT", "abc"), ("PORT", "70000"), ("DB_POOL_SIZE", "0"), ("DB_ACQUIRE_TIMEOUT_MS", "-1"),
            ("HTTP_MAX_BODY_BYTES", "lots"), ("HTTP_MAX_HEADER_BYTES", "1"), ("HTTP_TIMEOUT_S", ""),
            ("HTTP_MAX_PENDING_INPUT_BYTES", "10"), ("HTTP_READ_BUFFER_BYTES", "100"), ("HTTP_MAX_PENDING_OUTPUT_BYTES", "x"),
            ("CORS_ORIGINS", "localhost:3000"), ("LOG_LEVEL", "loud"), ("SHUTDOWN_GRACE_S", "x"),
            ("DATABASE_URL", "nonsense=1"), ("HOST", ""),
        ]
        for (name, value) in bad {
            var environment = ["DATABASE_URL": "postgresql://u@h/db"]
            environment[name] = value
            let error = #expect(throws: ConfigurationError.self, "\(name)=\(value)") { try AppConfiguration(environment: environment) }
            #expect(error?.variable == name)
        }
        #expect(throws: ConfigurationError.self) { try AppConfiguration(environment: [:]) }
        let custom = try AppConfiguration(environment: ["DATABASE_URL": "host=/tmp dbname=x", "CORS_ORIGINS": "https://a.example, http://b.example:8080", "LOG_LEVEL": "WARN"])
        #expect(custom.corsOrigins == ["https://a.example", "http://b.example:8080"])
        #expect(custom.logLevel == .warning)
    }

    @Test func logThrottleLetsOneThroughPerIntervalAndCountsTheRest() {
        let throttle = LogThrottle(interval: .seconds(1))
        let t0 = ContinuousClock.now
        #expect(throttle.admit(at: t0) == 0)
        #expect(throttle.admit(at: t0 + .milliseconds(10)) == nil)
        #expect(throttle.admit(at: t0 + .milliseconds(999)) == nil)
        #expect(throttle.admit(at: t0 + .seconds(1)) == 2)
        #expect(throttle.admit(at: t0 + .milliseconds(1500)) == nil)
        #expect(throttle.admit(at: t0 + .seconds(5)) == 1)
    }
}
