import CLibEvent
import CLibPQ
import DequeModule
import EventLoopCore
import Glibc
import Synchronization

/// One PostgreSQL connection driven non-blocking by a libevent loop: `PQsocket` is watched by
/// the loop, queries are sent with `PQsendPrepare`/`PQsendQueryPrepared` and flushed with
/// `PQflush`, results are read with `PQconsumeInput`/`PQisBusy`/`PQgetResult`. Every libpq call
/// happens on the loop thread, never on Swift's cooperative threads; callers just `await`.
public final class PostgresConnection: @unchecked Sendable {  // libpq and libevent state is touched only on `loop`'s thread; `broken` is atomic
    /// The pool's id for this connection.
    public let id: Int
    private let loop: EventLoop
    private var connection: OpaquePointer?
    private var readEvent: OpaquePointer?
    private var writeEvent: OpaquePointer?
    /// Statement names prepared on this connection.
    private var prepared: Set<String> = []
    /// Queries waiting or running; the first is on the wire.
    private var queue: Deque<PendingQuery> = []
    /// True once the connection runs in libpq pipeline mode (after the session setup).
    private var pipelined = false
    /// Called once (on the loop thread) when the connection closes for any reason but `close()`.
    private var onUnexpectedClose: (@Sendable (PostgresError) -> Void)?
    private let broken = Atomic<Bool>(false)

    private init(id: Int, loop: EventLoop) {
        self.id = id
        self.loop = loop
    }

    /// True once the connection has failed; it must not be used again.
    public var isBroken: Bool { broken.load(ordering: .relaxed) }

    // MARK: Connecting

    /// Opens a connection to `conninfo` (a URL or `key=value` string, anything libpq accepts)
    /// within `timeout`, then sets the session time zone to UTC.
    static func connect(
        id: Int, conninfo: String, applicationName: String, timeout: Duration, loop: EventLoop,
        onUnexpectedClose: @escaping @Sendable (PostgresError) -> Void
    ) async throws -> PostgresConnection {
        let connection = PostgresConnection(id: id, loop: loop)
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
            loop.execute {
                connection.startConnecting(conninfo: conninfo, applicationName: applicationName, timeout: timeout) { result in
                    continuation.resume(with: result)
                }
            }
        }
        _ = try await connection.simpleQuery("SET TIME ZONE 'UTC'")
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
            loop.execute {
                guard connection.connection != nil else {
                    continuation.resume(throwing: PostgresError(.connectionLost, "the connection closed while starting"))
                    return
                }
                guard PQenterPipelineMode(connection.connection) == 1 else {
                    continuation.resume(throwing: PostgresError(.connectFailed, "cannot enter pipeline mode"))
                    return
                }
                connection.pipelined = true
                connection.onUnexpectedClose = onUnexpectedClose
                continuation.resume()
            }
        }
        return connection
    }

    private func startConnecting(
        conninfo: String, applicationName: String, timeout: Duration,
        completion: @escaping (Result<Void, Error>) -> Void
    ) {
        let keywords = ["dbname", "application_name", "client_encoding"]
        let values = [conninfo, applicationName, "UTF8"]
        connection = withCStringArray(keywords) { keys in
            withCStringArray(values) { vals in PQconnectStartParams(keys, vals, 1) }
        }
        guard let pg = connection, PQstatus(pg) != CONNECTION_BAD else {
            let message = connection.map { errorMessage($0) } ?? "out of memory"
            finishConnection()
            completion(.failure(PostgresError(.connectFailed, message)))
            return
        }
        PQsetnonblocking(pg, 1)
        PQsetNoticeProcessor(pg, { _, _ in }, nil)
        let state = ConnectAttempt(completion: completion)
        loop.schedule(after: timeout) { [self] in
            guard !state.done else { return }
            state.done = true
            finishConnection()
            state.completion(.failure(PostgresError(.connectTimeout, "no connection within \(timeout)")))
        }
        pollConnect(PGRES_POLLING_WRITING, state)
    }

    /// Waits for the socket as `PQconnectPoll` asked, then polls again until OK or FAILED.
    private func pollConnect(_ status: PostgresPollingStatusType, _ attempt: ConnectAttempt) {
        guard !attempt.done, let pg = connection else { return }
        switch status {
        case PGRES_POLLING_OK:
            attempt.done = true
            startWatching()
            attempt.completion(.success(()))
        case PGRES_POLLING_READING, PGRES_POLLING_WRITING:
            let what = Int16(status == PGRES_POLLING_READING ? EV_READ : EV_WRITE)
            let box = Unmanaged.passRetained(Callback { [self] in
                pollConnect(PQconnectPoll(pg), attempt)
            }).toOpaque()
            event_base_once(loop.base, PQsocket(pg), what, { _, _, context in
                Unmanaged<Callback>.fromOpaque(context!).takeRetainedValue().run()
            }, box, nil)
        default:
            attempt.done = true
            let message = errorMessage(pg)
            finishConnection()
            attempt.completion(.failure(PostgresError(.connectFailed, message)))
        }
    }

    /// Registers the persistent read event and the on-demand write event for the ready connection.
    private func startWatching() {
        guard let pg = connection else { return }
        let me = Unmanaged.passUnretained(self).toOpaque()
        readEvent = event_new(loop.base, PQsocket(pg), Int16(EV_READ | EV_PERSIST), { _, _, context in
            let connection = Unmanaged<PostgresConnection>.fromOpaque(context!).takeUnretainedValue()
            withExtendedLifetime(connection) { connection.onReadable() }
        }, me)
        writeEvent = event_new(loop.base, PQsocket(pg), Int16(EV_WRITE), { _, _, context in
            let connection = Unmanaged<PostgresConnection>.fromOpaque(context!).takeUnretainedValue()
            withExtendedLifetime(connection) { connection.flush() }
        }, me)
        event_add(readEvent, nil)
    }

    // MARK: Queries

    /// Runs a prepared statement (prepared here on first use) with `binds`; resumes with its rows.
    public func query(_ statement: PreparedStatement, _ binds: [PostgresValue] = []) async throws -> PostgresRows {
        let parameters = try binds.map { try $0.encoded() }
        return try await enqueue(.prepared(statement, parameters))
    }

    /// Runs one SQL statement without parameters (BEGIN, COMMIT, DDL…).
    public func simpleQuery(_ sql: String) async throws -> PostgresRows {
        guard !sql.utf8.contains(0) else { throw PostgresError(.invalidValue, "SQL contains a NUL byte") }
        return try await enqueue(.simple(sql))
    }

    private func enqueue(_ command: PendingQuery.Command) async throws -> PostgresRows {
        try await withCheckedThrowingContinuation { continuation in
            loop.executeOrRunNow { [self] in
                guard connection != nil, !isBroken else {
                    continuation.resume(throwing: PostgresError(.connectionLost, "the connection is closed"))
                    return
                }
                queue.append(PendingQuery(command: command, continuation: continuation))
                if pipelined {
                    // Pipeline mode: send at once, behind whatever is still in flight.
                    send(at: queue.count - 1)
                } else if queue.count == 1 {
                    send(at: 0)
                }
            }
        }
    }

    /// Puts the query at `index` of the queue on the wire: PREPARE the first time its statement
    /// runs here, then execute, then (in pipeline mode) a sync that ends its results.
    private func send(at index: Int) {
        guard let pg = connection else { return }
        var ok: Bool
        switch queue[index].command {
        case .simple(let sql):
            ok = pipelined ? PQsendQueryParams(pg, sql, 0, nil, nil, nil, nil, 0) == 1 : PQsendQuery(pg, sql) == 1
        case .prepared(let statement, let parameters):
            ok = true
            if !prepared.contains(statement.name) {
                ok = PQsendPrepare(pg, statement.name, statement.sql, 0, nil) == 1
                prepared.insert(statement.name)
                queue[index].preparedHere = true
            }
            ok = ok && sendPrepared(pg, statement, parameters) == 1
        }
        if pipelined { ok = ok && PQpipelineSync(pg) == 1 }
        guard ok else {
            connectionFailed(PostgresError(.connectionLost, errorMessage(pg)))
            return
        }
        flush()
    }

    private func sendPrepared(_ pg: OpaquePointer, _ statement: PreparedStatement, _ parameters: [[CChar]?]) -> Int32 {
        var pointers: [UnsafeMutablePointer<CChar>?] = parameters.map { value in
            guard let value else { return nil }
            let copy = UnsafeMutablePointer<CChar>.allocate(capacity: value.count)
            copy.initialize(from: value, count: value.count)
            return copy
        }
        defer { pointers.forEach { $0?.deallocate() } }
        return pointers.withUnsafeMutableBufferPointer { buffer in
            buffer.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: max(1, buffer.count)) { values in
                PQsendQueryPrepared(pg, statement.name, Int32(parameters.count), parameters.isEmpty ? nil : values, nil, nil, 0)
            }
        }
    }

    /// Pushes buffered output; keeps write interest while libpq still has some.
    private func flush() {
        guard let pg = connection else { return }
        switch PQflush(pg) {
        case 0: break
        case 1: event_add(writeEvent, nil)
        default: connectionFailed(PostgresError(.connectionLost, errorMessage(pg)))
        }
    }

    private func onReadable() {
        guard let pg = connection else { return }
        guard PQconsumeInput(pg) == 1 else {
            connectionFailed(PostgresError(.connectionLost, errorMessage(pg)))
            return
        }
        var sawSeparator = false
        while let pg = connection, !queue.isEmpty, PQisBusy(pg) == 0 {
            guard let result = PQgetResult(pg) else {
                if pipelined {
                    // NULL ends one command's results; two in a row means nothing more is ready.
                    if sawSeparator { break }
                    sawSeparator = true
                } else {
                    completeFirst()
                    if !queue.isEmpty { send(at: 0) }
                }
                continue
            }
            sawSeparator = false
            if PQresultStatus(result) == PGRES_PIPELINE_SYNC {
                completeFirst()
            } else {
                queue[0].collector.add(result)
            }
            PQclear(result)
        }
        if let pg = connection, PQstatus(pg) == CONNECTION_BAD {
            connectionFailed(PostgresError(.connectionLost, errorMessage(pg), sqlState: queue.first?.collector.error?.sqlState))
        }
    }

    /// The first query in flight has all its results: resume its caller.
    private func completeFirst() {
        guard let pending = queue.popFirst() else { return }
        if let pg = connection, PQstatus(pg) == CONNECTION_BAD {
            let error = pending.collector.error
            pending.continuation.resume(throwing: PostgresError(.connectionLost, error?.message ?? errorMessage(pg), sqlState: error?.sqlState))
            return
        }
        if let error = pending.collector.error {
            if pending.preparedHere, pending.collector.firstResultFailed, case .prepared(let statement, _) = pending.command {
                prepared.remove(statement.name)
            }
            pending.continuation.resume(throwing: error)
        } else {
            pending.continuation.resume(returning: pending.collector.rows ?? .empty)
        }
    }

    // MARK: Closing

    /// Fails everything queued, frees the connection, and tells the pool.
    private func connectionFailed(_ error: PostgresError) {
        guard connection != nil else { return }
        finishConnection()
        let failed = queue
        queue.removeAll()
        for pending in failed { pending.continuation.resume(throwing: error) }
        onUnexpectedClose?(error)
        onUnexpectedClose = nil
    }

    private func finishConnection() {
        broken.store(true, ordering: .relaxed)
        if let readEvent { event_free(readEvent) }
        if let writeEvent { event_free(writeEvent) }
        readEvent = nil
        writeEvent = nil
        if let connection { PQfinish(connection) }
        connection = nil
    }

    /// Closes the connection; queued queries fail with `.connectionLost`.
    public func close() {
        loop.execute { [self] in
            onUnexpectedClose = nil
            connectionFailed(PostgresError(.connectionLost, "the connection was closed"))
        }
    }
}

// MARK: - Helpers

/// A query waiting for (or receiving) its results.
private struct PendingQuery {
    enum Command {
        case simple(String)
        case prepared(PreparedStatement, [[CChar]?])
    }
    let command: Command
    let continuation: CheckedContinuation<PostgresRows, Error>
    /// This query carried its statement's PREPARE (undone if the query fails).
    var preparedHere = false
    var collector = ResultCollector()
}

/// Rows and the first error of the results of one query.
private struct ResultCollector {
    var rows: PostgresRows?
    var error: PostgresError?
    private var results = 0
    /// The first result (a PREPARE's, when the query carried one) was an error.
    var firstResultFailed = false

    mutating func add(_ result: OpaquePointer) {
        results += 1
        defer { if results == 1 && error != nil { firstResultFailed = true } }
        switch PQresultStatus(result) {
        case PGRES_TUPLES_OK, PGRES_COMMAND_OK, PGRES_SINGLE_TUPLE:
            rows = copyRows(result)
        case PGRES_EMPTY_QUERY:
            rows = .empty
        default:
            if error == nil { error = serverError(result) }
        }
    }
}

/// One connect attempt's completion, called once (by success, failure or the deadline).
private final class ConnectAttempt {
    var done = false
    let completion: (Result<Void, Error>) -> Void
    init(completion: @escaping (Result<Void, Error>) -> Void) { self.completion = completion }
}

/// A closure handed through libevent's `void *` argument.
private final class Callback {
    let run: () -> Void
    init(_ run: @escaping () -> Void) { self.run = run }
}

private func copyRows(_ result: OpaquePointer) -> PostgresRows {
    let rowCount = Int(PQntuples(result))
    let columnCount = Int(PQnfields(result))
    var columns: [String] = []
    columns.reserveCapacity(columnCount)
    for column in 0..<Int32(columnCount) {
        columns.append(String(cString: PQfname(result, column)))
    }
    // One byte buffer and one (start, length) pair per cell: two allocations per result instead
    // of one string per cell.
    var bytes: [UInt8] = []
    var cells: [CellRange] = []
    cells.reserveCapacity(rowCount * columnCount)
    for row in 0..<Int32(rowCount) {
        for column in 0..<Int32(columnCount) {
            if PQgetisnull(result, row, column) == 1 {
                cells.append(CellRange(start: 0, length: -1))
            } else {
                let length = Int(PQgetlength(result, row, column))
                let value = UnsafeRawPointer(PQgetvalue(result, row, column)!).assumingMemoryBound(to: UInt8.self)
                cells.append(CellRange(start: Int32(bytes.count), length: Int32(length)))
                bytes.append(contentsOf: UnsafeBufferPointer(start: value, count: length))
            }
        }
    }
    let affected = Int(String(cString: PQcmdTuples(result))) ?? 0
    return PostgresRows(columns: columns, bytes: bytes, cells: cells, affectedRows: affected)
}

private func serverError(_ result: OpaquePointer) -> PostgresError {
    func field(_ code: Int32) -> String? {
        guard let value = PQresultErrorField(result, code) else { return nil }
        return String(cString: value)
    }
    let message = field(Int32(UInt8(ascii: "M"))) ?? String(cString: PQresultErrorMessage(result))
    return PostgresError(.server, message, sqlState: field(Int32(UInt8(ascii: "C"))), detail: field(Int32(UInt8(ascii: "D"))))
}

private func errorMessage(_ connection: OpaquePointer) -> String {
    String(cString: PQerrorMessage(connection)).trimmingTrailingWhitespace()
}

/// Calls `body` with a NULL-terminated array of C strings.
private func withCStringArray<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    let copies = strings.map { strdup($0) }
    defer { copies.forEach { free($0) } }
    var pointers: [UnsafePointer<CChar>?] = copies.map { UnsafePointer($0) }
    pointers.append(nil)
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}
