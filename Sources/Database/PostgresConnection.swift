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
///
/// The connection runs in libpq pipeline mode. Statements between two syncs form one implicit
/// transaction, so only read-only statements share a sync: the reads issued during one turn of
/// the loop go out together behind a single sync (one packet, one wake-up of the server). Every
/// other statement gets a sync of its own and is acknowledged only once that sync is (when it
/// has committed). A PREPARE also gets a sync of its own, so no other statement's failure can
/// undo it; a read skipped because an earlier read of its batch failed is sent again.
///
/// A watchdog timer enforces the statement deadlines: a query past `queryTimeout` is answered
/// with `.queryTimeout` and cancelled on the server (`PQcancel` blocks, so it runs on the
/// pool's canceller thread); a connection whose work has made no progress for
/// `stallThreshold` is reported stalled, so the pool sends nothing more to it; one that
/// ignores a cancel for another `queryTimeout`, or whose backlog passes `maxInFlight`, is closed.
public final class PostgresConnection: @unchecked Sendable {  // libpq and libevent state is touched only on `loop`'s thread; `broken` and `readBatchOpen` are atomic
    /// The deadlines a connection enforces on its statements.
    struct Deadlines: Sendable {
        var queryTimeout: Duration
        var stallThreshold: Duration
        /// Statements on the wire (answered or not) beyond which the connection is recycled.
        var maxInFlight: Int
    }

    /// A change in whether the connection is stalled, for the pool.
    enum StallReport: Sendable, Equatable {
        /// No progress for the stall threshold, behind a statement on `resource`.
        case stalled(resource: String)
        case resumed
    }

    /// The pool's id for this connection.
    public let id: Int
    private let loop: EventLoop
    private let deadlines: Deadlines
    /// The thread `PQcancel` runs on (it connects to the server and waits).
    private let canceller: EventLoop
    /// Fires every half stall threshold while the connection is open.
    private var watchdogEvent: OpaquePointer?
    /// When bytes last arrived from the server, or work arrived on an idle wire (coarse monotonic ns).
    private var lastProgress: UInt64 = 0
    private var isStalled = false
    /// The head statement cancels were sent for, when the first and the last went.
    private var cancelSent: (query: ObjectIdentifier, first: UInt64, last: UInt64)?
    /// Called on the loop thread when the connection becomes stalled or resumes.
    private var onStall: (@Sendable (StallReport) -> Void)?
    private var connection: OpaquePointer?
    private var readEvent: OpaquePointer?
    private var writeEvent: OpaquePointer?
    /// Signalled when reads were sent without a sync; its callback sends the sync once the
    /// loop's current turn has issued everything it will.
    private var syncEvent: OpaquePointer?
    /// Statement names prepared (or being prepared) on this connection, each with the number
    /// of the PREPARE that made it: a failure only undoes the entry its own PREPARE made.
    private var prepared: [String: Int] = [:]
    private var preparesSent = 0
    /// What was sent and is not answered yet, in the order the answers will come.
    private var wire: Deque<WireItem> = []
    /// Statements whose results are in, acknowledged when their sync is (that is when they commit).
    private var awaitingSync: [PendingQuery] = []
    /// Reads skipped because an earlier statement of their segment failed; sent again when
    /// that segment's sync arrives.
    private var skippedReads: [PendingQuery] = []
    /// How often one read is sent again after being skipped.
    static let maxResends = 64
    /// A cancel for the same head statement is sent again after this many stall thresholds.
    static let cancelResendThresholds = 5
    /// A connection whose head statement outlives this many query timeouts after its first
    /// cancel is closed.
    static let cancelGiveUpTimeouts = 3
    /// Statements on the wire, per unit of pipeline depth, beyond which a connection is recycled.
    static let inFlightPerDepth = 4
    /// Read-only statements sent since the last sync.
    private var unsyncedReads = 0
    /// `PQgetResult` returned a result of the command at the head of `wire` (so the next NULL
    /// ends that command).
    private var inCommand = false
    /// Called once (on the loop thread) when the connection closes for any reason but `close()`.
    private var onUnexpectedClose: (@Sendable (PostgresError) -> Void)?
    private let broken = Atomic<Bool>(false)
    /// Mirrors `unsyncedReads > 0` for the pool, which reads it from any thread.
    private let readBatchOpen = Atomic<Bool>(false)

    private init(id: Int, loop: EventLoop, deadlines: Deadlines, canceller: EventLoop) {
        self.id = id
        self.loop = loop
        self.deadlines = deadlines
        self.canceller = canceller
    }

    /// True once the connection has failed; it must not be used again.
    public var isBroken: Bool { broken.load(ordering: .relaxed) }

    /// True while reads sent in this turn of the loop wait for their sync: another read joining
    /// them costs no packet and no PostgreSQL wake-up of its own. A hint when read off the loop.
    var hasOpenReadBatch: Bool { readBatchOpen.load(ordering: .relaxed) }

    // MARK: Connecting

    /// Opens a connection to `conninfo` (a URL or `key=value` string, anything libpq accepts)
    /// within `timeout`, then sets the session time zone to UTC. The connection is started on
    /// `starter`, a thread that does nothing else (`PQconnectStartParams` resolves host names
    /// synchronously, and a slow DNS answer must not stall a loop that serves requests), and
    /// then driven on `loop`.
    static func connect(
        id: Int, conninfo: String, applicationName: String, timeout: Duration, loop: EventLoop, starter: EventLoop,
        deadlines: Deadlines, canceller: EventLoop,
        onStall: @escaping @Sendable (StallReport) -> Void,
        onUnexpectedClose: @escaping @Sendable (PostgresError) -> Void
    ) async throws -> PostgresConnection {
        let connection = PostgresConnection(id: id, loop: loop, deadlines: deadlines, canceller: canceller)
        let deadline = ContinuousClock.now + timeout
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
            starter.execute {
                let started = StartedConnection(startConnection(conninfo: conninfo, applicationName: applicationName))
                loop.execute {
                    connection.continueConnecting(started.pointer, deadline: deadline, timeout: timeout) { result in
                        continuation.resume(with: result)
                    }
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
                connection.onUnexpectedClose = onUnexpectedClose
                connection.onStall = onStall
                continuation.resume()
            }
        }
        return connection
    }

    /// Takes over a connection started by `startConnection` and polls it to the end (on the loop).
    private func continueConnecting(
        _ started: OpaquePointer?, deadline: ContinuousClock.Instant, timeout: Duration,
        completion: @escaping (Result<Void, Error>) -> Void
    ) {
        connection = started
        guard let pg = connection, PQstatus(pg) != CONNECTION_BAD else {
            let message = connection.map { errorMessage($0) } ?? "out of memory"
            finishConnection()
            completion(.failure(PostgresError(.connectFailed, message)))
            return
        }
        PQsetnonblocking(pg, 1)
        PQsetNoticeProcessor(pg, { _, _ in }, nil)
        let state = ConnectAttempt(completion: completion)
        loop.schedule(after: deadline - ContinuousClock.now) { [self] in
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
            guard PQenterPipelineMode(pg) == 1 else {
                let message = errorMessage(pg)
                finishConnection()
                attempt.completion(.failure(PostgresError(.connectFailed, "cannot enter pipeline mode: \(message)")))
                return
            }
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
        syncEvent = event_new(loop.base, -1, 0, { _, _, context in
            let connection = Unmanaged<PostgresConnection>.fromOpaque(context!).takeUnretainedValue()
            withExtendedLifetime(connection) { connection.syncReads() }
        }, me)
        watchdogEvent = event_new(loop.base, -1, Int16(EV_PERSIST), { _, _, context in
            let connection = Unmanaged<PostgresConnection>.fromOpaque(context!).takeUnretainedValue()
            withExtendedLifetime(connection) { connection.watchdog() }
        }, me)
        event_add(readEvent, nil)
        var interval = timeval(max(deadlines.stallThreshold / 2, .milliseconds(5)))
        event_add(watchdogEvent, &interval)
    }

    // MARK: Queries

    /// Runs a prepared statement (prepared here on first use) with `binds`; resumes with its rows,
    /// or `.queryTimeout` after `timeout` (the connection's query timeout when nil).
    public func query(_ statement: PreparedStatement, _ binds: [PostgresValue] = [], timeout: Duration? = nil) async throws -> PostgresRows {
        let parameters = try binds.map { try $0.encoded() }
        return try await enqueue(.prepared(statement, parameters), timeout: timeout)
    }

    /// Runs one SQL statement without parameters (BEGIN, COMMIT, DDL…).
    public func simpleQuery(_ sql: String) async throws -> PostgresRows {
        guard !sql.utf8.contains(0) else { throw PostgresError(.invalidValue, "SQL contains a NUL byte") }
        return try await enqueue(.simple(sql), timeout: nil)
    }

    private func enqueue(_ command: PendingQuery.Command, timeout: Duration?) async throws -> PostgresRows {
        let deadline = monotonicNanoseconds() + nanoseconds(timeout ?? deadlines.queryTimeout)
        return try await withCheckedThrowingContinuation { continuation in
            // On the loop (the usual case) the query goes out now, without a closure to queue.
            if loop.isInLoopThread {
                start(command, continuation, deadline: deadline)
            } else {
                loop.execute { self.start(command, continuation, deadline: deadline) }
            }
        }
    }

    private func start(_ command: PendingQuery.Command, _ continuation: CheckedContinuation<PostgresRows, Error>, deadline: UInt64) {
        guard connection != nil, !isBroken else {
            continuation.resume(throwing: PostgresError(.connectionLost, "the connection is closed"))
            return
        }
        if wire.isEmpty { lastProgress = monotonicNanoseconds() }
        send(PendingQuery(command: command, continuation: continuation, deadline: deadline))
    }

    // MARK: Deadlines

    /// Answers the queries past their deadline, reports a change in stalling, cancels a head
    /// statement past its deadline, and closes a connection that ignores its cancel.
    private func watchdog() {
        guard connection != nil else { return }
        let now = monotonicNanoseconds()
        for item in wire {
            guard let query = item.query, !query.answered, query.deadline <= now else { continue }
            query.answer(.failure(PostgresError(.queryTimeout, "no answer from PostgreSQL within \(deadlines.queryTimeout)")))
        }
        for query in awaitingSync + skippedReads where !query.answered && query.deadline <= now {
            query.answer(.failure(PostgresError(.queryTimeout, "no answer from PostgreSQL within \(deadlines.queryTimeout)")))
        }
        let head = wire.lazy.compactMap(\.query).first
        let stalled = !wire.isEmpty && now &- lastProgress > nanoseconds(deadlines.stallThreshold)
        if stalled != isStalled {
            isStalled = stalled
            onStall?(stalled ? .stalled(resource: head?.resource ?? "") : .resumed)
            if stalled, let head { releaseReads(behind: head) }
        }
        guard let head else { return }
        if let sent = cancelSent, sent.query == ObjectIdentifier(head) {
            // A cancel that arrived between two statements cancels nothing: send it again every
            // few stall thresholds; a connection that ignores them all is closed.
            if now &- sent.first > UInt64(Self.cancelGiveUpTimeouts) * nanoseconds(deadlines.queryTimeout) {
                connectionFailed(PostgresError(.queryTimeout, "PostgreSQL ignored its cancel requests"))
                return
            }
            if now &- sent.last > UInt64(Self.cancelResendThresholds) * nanoseconds(deadlines.stallThreshold) { cancel(head) }
        } else if head.deadline <= now {
            cancel(head)
        }
        if wire.count > deadlines.maxInFlight {
            connectionFailed(PostgresError(.queryTimeout, "\(wire.count) statements in flight on a stalled connection"))
        }
    }

    /// Answers `.stalled` the reads queued behind a blocked head that wait on something else:
    /// they have not run, so the pool runs them again on another connection (their results
    /// here, if any come, are dropped). Writes stay: they may still commit, and are never sent twice.
    private func releaseReads(behind head: PendingQuery) {
        for item in wire {
            guard let query = item.query, query !== head, query.isReadOnly, !query.answered, query.resource != head.resource else { continue }
            query.answer(.failure(PostgresError(.stalled, "queued behind a blocked statement on \(head.resource)")))
        }
    }

    /// The pool found another connection already stalled behind the same resource: the head
    /// statement here is answered `.stalled` and cancelled, so this connection serves again.
    func cancelStalledHead() {
        loop.execute { [self] in cancelHeadOnLoop() }
    }

    private func cancelHeadOnLoop() {
        guard connection != nil, let head = wire.lazy.compactMap(\.query).first else { return }
        head.answer(.failure(PostgresError(.stalled, "PostgreSQL is not answering statements on \(head.resource)")))
        if cancelSent?.query != ObjectIdentifier(head) { cancel(head) }
    }

    /// Asks the server to cancel what it is running (the head statement, unless it finished in
    /// the meantime: then the next one, which fails with 57014 and is answered 503 like a timeout).
    private func cancel(_ head: PendingQuery) {
        guard let pg = connection, let handle = PQgetCancel(pg) else { return }
        let now = monotonicNanoseconds()
        let first = cancelSent.flatMap { $0.query == ObjectIdentifier(head) ? $0.first : nil } ?? now
        cancelSent = (ObjectIdentifier(head), first, now)
        let request = CancelRequest(handle)
        canceller.execute { request.send() }
    }

    /// Puts a query on the wire, behind whatever is still in flight: its PREPARE the first time
    /// its statement runs here (with a sync of its own), then its execution, then a sync, now or
    /// (for a read) at the end of the loop's turn.
    private func send(_ query: PendingQuery) {
        guard let pg = connection else {
            query.answer(.failure(PostgresError(.connectionLost, "the connection is closed")))
            return
        }
        var ok = true
        switch query.command {
        case .simple(let sql):
            ok = syncPendingReads(pg) && PQsendQueryParams(pg, sql, 0, nil, nil, nil, nil, 0) == 1
            wire.append(.command(query, last: true))
            ok = ok && sync(pg)
        case .prepared(let statement, let parameters):
            defer { query.preparation = prepared[statement.name] }
            if prepared[statement.name] == nil {
                ok = syncPendingReads(pg) && PQsendPrepare(pg, statement.name, statement.sql, 0, nil) == 1
                wire.append(.command(query, last: false))
                ok = ok && sync(pg)
                preparesSent += 1
                prepared[statement.name] = preparesSent
                query.preparedHere = true
            }
            if statement.isReadOnly {
                ok = ok && sendPrepared(pg, statement, parameters) == 1
                wire.append(.command(query, last: true))
                unsyncedReads += 1
                if unsyncedReads == 1 {
                    readBatchOpen.store(true, ordering: .relaxed)
                    event_active(syncEvent, 0, 0)
                }
                guard ok else { break }
                if !query.preparedHere { return }  // `syncReads` flushes
            } else {
                ok = ok && syncPendingReads(pg) && sendPrepared(pg, statement, parameters) == 1
                wire.append(.command(query, last: true))
                ok = ok && sync(pg)
            }
        }
        guard ok else {
            connectionFailed(PostgresError(.connectionLost, errorMessage(pg)))
            return
        }
        flush()
    }

    /// Ends the current segment of the pipeline (`PQpipelineSync` also flushes).
    private func sync(_ pg: OpaquePointer) -> Bool {
        guard PQpipelineSync(pg) == 1 else { return false }
        wire.append(.sync)
        return true
    }

    /// Closes the batch of reads sent so far, if any.
    private func syncPendingReads(_ pg: OpaquePointer) -> Bool {
        guard unsyncedReads > 0 else { return true }
        unsyncedReads = 0
        readBatchOpen.store(false, ordering: .relaxed)
        return sync(pg)
    }

    /// The loop's turn is over: the reads it sent go out behind one sync.
    private func syncReads() {
        guard let pg = connection else { return }
        guard syncPendingReads(pg) else {
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
                PQsendQueryPrepared(pg, statement.name, Int32(parameters.count), parameters.isEmpty ? nil : values, nil, nil, statement.binaryResults ? 1 : 0)
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

    /// Reads what arrived and hands every finished command's results to its query. Each command's
    /// results end with a NULL from `PQgetResult`; a sync answers with `PGRES_PIPELINE_SYNC`; two
    /// NULLs in a row mean nothing more is ready.
    private func onReadable() {
        guard let pg = connection else { return }
        guard PQconsumeInput(pg) == 1 else {
            connectionFailed(PostgresError(.connectionLost, errorMessage(pg)))
            return
        }
        // Bytes arrived: a statement that is sending rows is moving, even before its result is whole.
        lastProgress = monotonicNanoseconds()
        var previousWasNull = false
        while let pg = connection, PQisBusy(pg) == 0 {
            guard let result = PQgetResult(pg) else {
                if inCommand {
                    inCommand = false
                    commandFinished()
                } else if previousWasNull {
                    break
                }
                previousWasNull = true
                continue
            }
            previousWasNull = false
            defer { PQclear(result) }
            let status = PQresultStatus(result)
            if status == PGRES_PIPELINE_SYNC {
                guard case .sync? = wire.popFirst() else {
                    connectionFailed(PostgresError(.connectionLost, "unexpected sync from the server"))
                    return
                }
                let acknowledged = awaitingSync
                awaitingSync.removeAll()
                acknowledged.forEach(finish)
                // The failed segment is over: its skipped reads go out again in a new one. (Sent
                // before this sync, libpq would report them skipped again at once, for ever.)
                let skipped = skippedReads
                skippedReads.removeAll()
                skipped.filter { !$0.answered }.forEach(send)
                continue
            }
            guard case .command(let query, _)? = wire.first else {
                connectionFailed(PostgresError(.connectionLost, "a result nobody asked for"))
                return
            }
            inCommand = true
            if status == PGRES_PIPELINE_ABORTED {
                query.aborted = true
            } else {
                query.collector.add(result)
            }
        }
        if let pg = connection, PQstatus(pg) == CONNECTION_BAD {
            let error = wire.lazy.compactMap { $0.query?.collector.error }.first
            connectionFailed(PostgresError(.connectionLost, errorMessage(pg), sqlState: error?.sqlState))
        }
    }

    /// The command at the head of the wire has all its results.
    private func commandFinished() {
        guard case .command(let query, let last)? = wire.popFirst() else { return }
        guard last else {
            // Its PREPARE; the execution follows. A PREPARE that failed (or was cancelled)
            // left nothing prepared, whatever becomes of the query.
            guard let error = query.collector.error, case .prepared(let statement, _) = query.command else { return }
            if error.sqlState == "42P05" {
                query.collector.error = nil  // it exists already: as good as prepared
            } else if prepared[statement.name] == query.preparation {
                prepared[statement.name] = nil
            }
            return
        }
        if query.answered {
            return  // timed out and answered already; its results are dropped
        } else if query.aborted && query.collector.error == nil {
            // Skipped because an earlier read of its batch failed: it never ran, so it runs again
            // once the failed segment's sync is in, a bounded number of times.
            query.aborted = false
            query.collector = ResultCollector()
            query.resends += 1
            if query.resends > Self.maxResends {
                query.answer(.failure(PostgresError(.connectionLost, "a read was skipped \(Self.maxResends) times by failures before it")))
            } else {
                skippedReads.append(query)
            }
        } else if query.isReadOnly {
            finish(query)
        } else {
            awaitingSync.append(query)
        }
    }

    /// Resumes the caller with the query's rows or its first error.
    private func finish(_ query: PendingQuery) {
        if let error = query.collector.error {
            if error.sqlState == "26000", case .prepared(let statement, _) = query.command {
                // The statement is missing on the server (its PREPARE failed, or a pooler or
                // DISCARD ALL dropped it): prepare it again next time, unless a newer PREPARE
                // is on its way, and let this request be retried.
                if prepared[statement.name] == query.preparation { prepared[statement.name] = nil }
                query.answer(.failure(PostgresError(.connectionLost, "the statement was not prepared on the server", sqlState: error.sqlState)))
                return
            }
            query.answer(.failure(error))
        } else {
            query.answer(.success(query.collector.rows ?? .empty))
        }
    }

    // MARK: Closing

    /// Fails everything queued, frees the connection, and tells the pool.
    private func connectionFailed(_ error: PostgresError) {
        guard connection != nil else { return }
        finishConnection()
        var failed = awaitingSync + skippedReads
        skippedReads.removeAll()
        var seen = Set(failed.map(ObjectIdentifier.init))
        for item in wire {
            if let query = item.query, seen.insert(ObjectIdentifier(query)).inserted { failed.append(query) }
        }
        wire.removeAll()
        awaitingSync.removeAll()
        unsyncedReads = 0
        readBatchOpen.store(false, ordering: .relaxed)
        for query in failed {
            query.answer(.failure(PostgresError(
                error.kind, query.collector.error?.message ?? error.message, sqlState: query.collector.error?.sqlState
            )))
        }
        if isStalled {
            isStalled = false
            onStall?(.resumed)
        }
        onStall = nil
        onUnexpectedClose?(error)
        onUnexpectedClose = nil
    }

    private func finishConnection() {
        broken.store(true, ordering: .relaxed)
        if let readEvent { event_free(readEvent) }
        if let writeEvent { event_free(writeEvent) }
        if let syncEvent { event_free(syncEvent) }
        if let watchdogEvent { event_free(watchdogEvent) }
        readEvent = nil
        writeEvent = nil
        syncEvent = nil
        watchdogEvent = nil
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

/// A query waiting for (or receiving) its results; a class because the wire lists it once per
/// command it sent.
private final class PendingQuery {
    enum Command {
        case simple(String)
        case prepared(PreparedStatement, [[CChar]?])
    }
    let command: Command
    private let continuation: CheckedContinuation<PostgresRows, Error>
    /// When it times out (coarse monotonic ns).
    let deadline: UInt64
    /// Its caller has its answer (rows, an error, or a timeout); whatever comes later is dropped.
    private(set) var answered = false
    /// This query carried its statement's PREPARE.
    var preparedHere = false
    /// The number of the PREPARE its execution relies on.
    var preparation: Int?
    /// How often it was sent again after being skipped.
    var resends = 0
    /// The server skipped its execution (an earlier statement of its segment failed).
    var aborted = false
    var collector = ResultCollector()

    init(command: Command, continuation: CheckedContinuation<PostgresRows, Error>, deadline: UInt64) {
        self.command = command
        self.continuation = continuation
        self.deadline = deadline
    }

    /// Resumes the caller, once: a later answer (results after a timeout) is ignored.
    func answer(_ result: Result<PostgresRows, Error>) {
        guard !answered else { return }
        answered = true
        continuation.resume(with: result)
    }

    /// What the statement waits on when it blocks (see `PreparedStatement.resource`).
    var resource: String {
        if case .prepared(let statement, _) = command { return statement.resource }
        return ""
    }

    var isReadOnly: Bool {
        if case .prepared(let statement, _) = command { return statement.isReadOnly }
        return false
    }
}

/// What the server will answer next: a command of a query, or a sync.
private enum WireItem {
    /// `last` is false for a PREPARE sent ahead of the query's execution.
    case command(PendingQuery, last: Bool)
    case sync

    var query: PendingQuery? {
        if case .command(let query, _) = self { return query }
        return nil
    }
}

/// Rows and the first error of the results of one query.
private struct ResultCollector {
    var rows: PostgresRows?
    var error: PostgresError?

    mutating func add(_ result: OpaquePointer) {
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

/// Starts a connection with `PQconnectStartParams` (which may block resolving a host name).
private func startConnection(conninfo: String, applicationName: String) -> OpaquePointer? {
    // TCP keepalives and a user timeout come first, so the caller's conninfo can override them:
    // a peer that vanishes (a black-holed network) is noticed in about ten seconds, not hours.
    let keywords = ["keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout",
                    "dbname", "application_name", "client_encoding"]
    let values = ["1", "5", "2", "3", "10000", conninfo, applicationName, "UTF8"]
    return withCStringArray(keywords) { keys in
        withCStringArray(values) { vals in PQconnectStartParams(keys, vals, 1) }
    }
}

/// A connection just started on the connector thread, on its way to its loop.
private struct StartedConnection: @unchecked Sendable {  // handed from the connector thread to the loop; only one of them uses it at a time
    let pointer: OpaquePointer?
    init(_ pointer: OpaquePointer?) { self.pointer = pointer }
}

/// One connect attempt's completion, called once (by success, failure or the deadline).
private final class ConnectAttempt {
    var done = false
    let completion: (Result<Void, Error>) -> Void
    init(completion: @escaping (Result<Void, Error>) -> Void) { self.completion = completion }
}

/// A `PGcancel` on its way to the canceller thread, used and freed there once.
private final class CancelRequest: @unchecked Sendable {  // made on the loop, then touched only by the canceller thread
    private let handle: OpaquePointer

    init(_ handle: OpaquePointer) { self.handle = handle }

    /// Sends the cancel request (blocks until the server takes it) and frees the handle.
    func send() {
        var message = [CChar](repeating: 0, count: 256)
        _ = PQcancel(handle, &message, Int32(message.count))
        PQfreeCancel(handle)
    }
}

/// CLOCK_MONOTONIC_COARSE in nanoseconds: a few nanoseconds to read, a few milliseconds fine,
/// which is all statement deadlines need.
func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC_COARSE, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}

/// A non-negative `Duration` in nanoseconds.
func nanoseconds(_ duration: Duration) -> UInt64 {
    let (seconds, attoseconds) = duration.components
    return UInt64(max(0, seconds)) * 1_000_000_000 + UInt64(max(0, attoseconds) / 1_000_000_000)
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
    var types: [UInt32] = []
    columns.reserveCapacity(columnCount)
    types.reserveCapacity(columnCount)
    for column in 0..<Int32(columnCount) {
        columns.append(String(cString: PQfname(result, column)))
        types.append(UInt32(PQftype(result, column)))
    }
    let isBinary = columnCount > 0 && PQfformat(result, 0) == 1
    // One byte buffer (sized first) and one (start, length) pair per cell: two allocations per
    // result instead of one string per cell.
    var byteCount = 0
    for row in 0..<Int32(rowCount) {
        for column in 0..<Int32(columnCount) { byteCount += Int(PQgetlength(result, row, column)) }
    }
    var bytes: [UInt8] = []
    bytes.reserveCapacity(byteCount)
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
    return PostgresRows(columns: columns, types: types, isBinary: isBinary, bytes: bytes, cells: cells, affectedRows: affected)
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
