import Database
import Logging
import Server

/// Everything the server reads from the environment, validated before anything starts.
struct AppConfiguration: Sendable {
    var databaseURL: String
    var host: String
    var port: Int
    var eventLoops: Int
    var poolSize: Int
    var acquireTimeout: Duration
    var maxWaiters: Int
    var pipelineDepth: Int
    var lookupPipelineDepth: Int
    var connectTimeout: Duration
    var queryTimeout: Duration
    var stallThreshold: Duration
    /// `DB_PGBOUNCER=transaction`: PostgreSQL is reached through a transaction pooler.
    var transactionPooling: Bool
    /// Concurrent reads of the same thing share one statement (`PostgresTaskStore.Coalescing`).
    var coalesceReads: Bool
    var readyProbeTimeout: Duration
    var startupTimeout: Duration
    var maxBodyBytes: Int
    var maxHeaderBytes: Int
    var httpTimeout: Duration
    var maxPendingInputBytes: Int
    var readBufferBytes: Int
    var maxPendingOutputBytes: Int
    var maxConnections: Int
    var corsOrigins: [String]
    var logLevel: Logger.Level
    var shutdownGrace: Duration
    var requireIfMatch: Bool
    var idempotencyKeyLifetime: Duration
    var idempotencyPurgeInterval: Duration
    var listBufferedRows: Int
    var eventLimits: EventFeed.Limits
    /// Where the change feed's LISTEN connection goes; nil: no feed (behind a transaction pooler
    /// without `DB_LISTEN_URL`).
    var listenURL: String?
    var listFetchRows: Int
    var listMaxStreams: Int

    static let defaultCORSOrigins = ["http://localhost:5173", "http://localhost:3000", "https://taskm.duckdns.org"]

    /// Reads and checks every variable; the first bad one throws a `ConfigurationError` naming it.
    init(environment: [String: String], cpus: Int = availableCPUs(), defaultConnections: Int = defaultMaxConnections()) throws {
        let reader = EnvironmentReader(environment)
        guard let url = environment["DATABASE_URL"] else {
            throw ConfigurationError(variable: "DATABASE_URL", message: "is not set (use `make run` for a local database)")
        }
        if let problem = validateConninfo(url) {
            throw ConfigurationError(variable: "DATABASE_URL", message: "is not a connection string libpq accepts: \(problem)")
        }
        databaseURL = url
        // The layers' own defaults, so that each is written once.
        let server = ServerConfiguration(eventLoops: cpus, maxConnections: defaultConnections)
        let pool = PoolConfiguration(conninfo: url)
        host = try reader.string("HOST", default: server.host)
        port = try reader.int("PORT", default: server.port, range: 0...65535)
        eventLoops = try reader.int("HTTP_EVENT_LOOPS", default: cpus, range: 1...256)
        poolSize = try reader.int("DB_POOL_SIZE", default: min(32, max(4, 4 * cpus)), range: 1...1000)
        acquireTimeout = .milliseconds(try reader.int("DB_ACQUIRE_TIMEOUT_MS", default: milliseconds(pool.acquireTimeout), range: 1...600_000))
        pipelineDepth = try reader.int("DB_PIPELINE_DEPTH", default: pool.pipelineDepth, range: 1...1000)
        lookupPipelineDepth = try reader.int("DB_LOOKUP_PIPELINE_DEPTH", default: pool.lookupPipelineDepth, range: 1...10_000)
        connectTimeout = .milliseconds(try reader.int("DB_CONNECT_TIMEOUT_MS", default: milliseconds(pool.connectTimeout), range: 1...600_000))
        startupTimeout = .seconds(try reader.int("DB_STARTUP_TIMEOUT_S", default: 60, range: 0...3600))
        maxBodyBytes = try reader.int("HTTP_MAX_BODY_BYTES", default: server.maxBodyBytes, range: 1...1_073_741_824)
        maxHeaderBytes = try reader.int("HTTP_MAX_HEADER_BYTES", default: server.maxHeaderBytes, range: 256...1_048_576)
        httpTimeout = .seconds(try reader.int("HTTP_TIMEOUT_S", default: Int(server.timeout.components.seconds), range: 1...3600))
        maxPendingInputBytes = try reader.int("HTTP_MAX_PENDING_INPUT_BYTES", default: server.maxPendingInputBytes, range: 1024...1_073_741_824)
        readBufferBytes = try reader.int("HTTP_READ_BUFFER_BYTES", default: server.readBufferBytes, range: 512...16_777_216)
        maxPendingOutputBytes = try reader.int("HTTP_MAX_PENDING_OUTPUT_BYTES", default: server.maxPendingOutputBytes, range: 1024...1_073_741_824)
        maxConnections = try reader.int("HTTP_MAX_CONNECTIONS", default: server.maxConnections, range: 1...1_000_000)
        // A connection has one request in handling at a time: with a waiter's place for each,
        // nothing is refused below the connection limit.
        maxWaiters = try reader.int("DB_MAX_WAITERS", default: max(pool.maxWaiters, maxConnections), range: 0...1_000_000)
        queryTimeout = .milliseconds(try reader.int("DB_QUERY_TIMEOUT_MS", default: milliseconds(pool.queryTimeout), range: 1...3_600_000))
        stallThreshold = .milliseconds(try reader.int("DB_STALL_THRESHOLD_MS", default: milliseconds(pool.stallThreshold), range: 10...600_000))
        // Session pooling behaves as a direct connection; only transaction pooling changes anything.
        transactionPooling = try reader.choice("DB_PGBOUNCER", from: ["off", "session", "transaction"], default: "off") == "transaction"
        readyProbeTimeout = .milliseconds(try reader.int("READY_PROBE_TIMEOUT_MS", default: 1000, range: 1...600_000))
        guard queryTimeout < httpTimeout else {
            throw ConfigurationError(variable: "DB_QUERY_TIMEOUT_MS", message: "must be below HTTP_TIMEOUT_S, so a stuck query is answered 503 before the request times out")
        }
        shutdownGrace = .seconds(try reader.int("SHUTDOWN_GRACE_S", default: 25, range: 0...3600))
        corsOrigins = try reader.origins("CORS_ORIGINS", default: Self.defaultCORSOrigins)
        logLevel = try reader.logLevel("LOG_LEVEL", default: .info)
        requireIfMatch = try reader.bool("REQUIRE_IF_MATCH", default: false)
        coalesceReads = try reader.bool("DB_COALESCE_READS", default: true)
        idempotencyKeyLifetime = .seconds(try reader.int("IDEMPOTENCY_KEY_TTL_S", default: 86_400, range: 1...2_592_000))
        var events = EventFeed.Limits()
        // By default 15 s, or half the HTTP timeout when that is shorter.
        let timeoutSeconds = Int(httpTimeout.components.seconds)
        let defaultHeartbeat = max(1, min(Int(events.heartbeat.components.seconds), timeoutSeconds / 2))
        events.heartbeat = .seconds(try reader.int("SSE_HEARTBEAT_S", default: defaultHeartbeat, range: 1...3600))
        guard events.heartbeat < httpTimeout else {
            throw ConfigurationError(variable: "SSE_HEARTBEAT_S", message: "must be below HTTP_TIMEOUT_S, or an idle event stream would be cut off")
        }
        events.batchInterval = .milliseconds(try reader.int("SSE_BATCH_MS", default: milliseconds(events.batchInterval), range: 1...1000))
        events.maxSubscribers = try reader.int("SSE_MAX_SUBSCRIBERS", default: events.maxSubscribers, range: 0...1_000_000)
        events.historySize = try reader.int("SSE_HISTORY_EVENTS", default: events.historySize, range: 0...1_000_000)
        events.subscriberBuffer = try reader.int("SSE_SUBSCRIBER_BUFFER_EVENTS", default: events.subscriberBuffer, range: 1...1_000_000)
        eventLimits = events
        if let url = environment["DB_LISTEN_URL"] {
            if let problem = validateConninfo(url) {
                throw ConfigurationError(variable: "DB_LISTEN_URL", message: "is not a connection string libpq accepts: \(problem)")
            }
            listenURL = url
        } else {
            listenURL = transactionPooling ? nil : databaseURL
        }
        let streaming = ListStreaming()
        listBufferedRows = try reader.int("LIST_BUFFERED_ROWS", default: streaming.bufferedRows, range: 1...1_000_000)
        listFetchRows = try reader.int("LIST_FETCH_ROWS", default: streaming.fetchRows, range: 1...100_000)
        // Each streamed list holds a connection while its client reads; two are left for the
        // rest (pipelined, a few connections carry many requests).
        listMaxStreams = try reader.int("LIST_MAX_STREAMS", default: max(1, poolSize - 2), range: 0...1000)
        idempotencyPurgeInterval = .seconds(try reader.int("IDEMPOTENCY_PURGE_INTERVAL_S", default: 300, range: 1...86_400))
    }
}

/// Whole milliseconds of a duration (for defaults read as milliseconds).
private func milliseconds(_ duration: Duration) -> Int {
    Int(duration.components.seconds) * 1000 + Int(duration.components.attoseconds / 1_000_000_000_000_000)
}

/// A variable with a value the server cannot use.
struct ConfigurationError: Error, CustomStringConvertible {
    let variable: String
    let message: String
    var description: String { "\(variable) \(message)" }
}

/// Typed reads of environment variables with ranges and defaults.
private struct EnvironmentReader {
    let environment: [String: String]
    init(_ environment: [String: String]) { self.environment = environment }

    func string(_ name: String, default value: String) throws -> String {
        guard let text = environment[name] else { return value }
        guard !text.trimmingASCIISpaces().isEmpty else {
            throw ConfigurationError(variable: name, message: "must not be empty")
        }
        return text
    }

    func int(_ name: String, default value: Int, range: ClosedRange<Int>) throws -> Int {
        guard let text = environment[name] else { return value }
        guard let number = Int(text.trimmingASCIISpaces()), range.contains(number) else {
            throw ConfigurationError(variable: name, message: "must be a whole number from \(range.lowerBound) to \(range.upperBound) (got \"\(text)\")")
        }
        return number
    }

    func choice(_ name: String, from choices: [String], default value: String) throws -> String {
        guard let text = environment[name] else { return value }
        let choice = text.trimmingASCIISpaces().lowercased()
        guard choices.contains(choice) else {
            throw ConfigurationError(variable: name, message: "must be one of \(choices.joined(separator: ", ")) (got \"\(text)\")")
        }
        return choice
    }

    func bool(_ name: String, default value: Bool) throws -> Bool {
        guard let text = environment[name] else { return value }
        switch text.trimmingASCIISpaces().lowercased() {
        case "1", "true", "yes", "on": return true
        case "0", "false", "no", "off": return false
        default: throw ConfigurationError(variable: name, message: "must be true or false (got \"\(text)\")")
        }
    }

    func origins(_ name: String, default value: [String]) throws -> [String] {
        guard let text = environment[name] else { return value }
        let origins = text.split(separator: ",").map { $0.trimmingASCIISpaces() }.filter { !$0.isEmpty }
        for origin in origins where !(origin.hasPrefix("http://") || origin.hasPrefix("https://")) || origin.hasSuffix("/") {
            throw ConfigurationError(variable: name, message: "must list origins like https://example.com, comma separated (got \"\(origin)\")")
        }
        return origins
    }

    func logLevel(_ name: String, default value: Logger.Level) throws -> Logger.Level {
        guard let text = environment[name] else { return value }
        let normalized = text.trimmingASCIISpaces().lowercased()
        if normalized == "warn" { return .warning }
        guard let level = Logger.Level(rawValue: normalized) else {
            let names = Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")
            throw ConfigurationError(variable: name, message: "must be one of \(names) (got \"\(text)\")")
        }
        return level
    }
}
