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
/// Nothing the server sends is trusted blindly. Every segment ends with a check statement that
/// echoes a number unique to that segment, and every statement's result must have its declared
/// shape (`ResultShape`); a segment's answers reach their callers only once its check came back
/// right. A result nobody asked for, a sync out of turn, a result of the wrong shape or a check
/// that does not match (a pooler or proxy that mixed up sessions, say) poisons the connection:
/// it is closed and everything in flight on it fails with `.protocolViolation`.
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
    private var watchdogTimer: LoopTimer?
    /// When bytes last arrived from the server, or work arrived on an idle wire (coarse monotonic ns).
    private var lastProgress: UInt64 = 0
    private var isStalled = false
    /// The head statement cancels were sent for, when the first and the last went.
    private var cancelSent: (query: ObjectIdentifier, first: UInt64, last: UInt64)?
    /// Called on the loop thread when the connection becomes stalled or resumes.
    private var onStall: (@Sendable (StallReport) -> Void)?
    private var connection: OpaquePointer?
    private var reader: IOWatcher?
    /// Armed while libpq has output the socket did not take.
    private var writer: IOWatcher?
    /// Fired when reads were sent without a sync; it sends the sync once the loop's current
    /// turn has issued everything it will.
    private var syncTrigger: LoopTrigger?
    /// Statement names prepared (or being prepared) on this connection, each with the number
    /// of the PREPARE that made it: a failure only undoes the entry its own PREPARE made.
    private var prepared: [String: Int] = [:]
    private var preparesSent = 0
    /// What was sent and is not answered yet, in the order the answers will come.
    private var wire: Deque<WireItem> = []
    /// Statements of the current segment whose results are in; answered when its sync arrives
    /// (that is when writes have committed), if its check came back right.
    private var segment: [PendingQuery] = []
    /// What the current segment's check answered, once it has.
    private var segmentCheck: SegmentCheck?
    /// Segments end with the check statement (from the end of `connect` on).
    private var checksSegments = false
    /// The number the next segment's check echoes: random per connection, then counting.
    private var nextCheckValue = UInt64.random(in: .min ... .max)
    /// The statement every segment ends with; it echoes its int8 parameter.
    static let checkStatement = "__segment_check"
    /// How often one read is sent again after being skipped.
    static let maxResends = 64
    /// A cancel for the same head statement is sent again after this many stall thresholds.
    static let cancelResendThresholds = 2
    /// A connection whose head statement outlives this many query timeouts after its first
    /// cancel is closed (a cancel takes effect in milliseconds; one that does nothing for this
    /// long met an idle server whose answer went astray, and the connection serves no one).
    static let cancelGiveUpTimeouts = 1
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
    /// Queries dropped without an answer and answered by their deinit: a bug if ever above zero.
    static let reclaimedQueries = Atomic<Int>(0)
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
        do {
            _ = try await connection.simpleQuery("SET TIME ZONE 'UTC'")
            do {
                _ = try await connection.simpleQuery("PREPARE \(checkStatement) (int8) AS SELECT $1")
            } catch let error as PostgresError where error.sqlState == "42P05" {
                // Already prepared in this session (a session pooler handed over a used one): a
                // different definition would fail every check and poison the connection.
            }
        } catch {
            // Its events are registered and refer to it: they go before it does.
            connection.close()
            throw error
        }
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
            loop.execute {
                guard connection.connection != nil else {
                    continuation.resume(throwing: PostgresError(.connectionLost, "the connection closed while starting"))
                    return
                }
                connection.checksSegments = true
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
            loop.whenReady(PQsocket(pg), for: status == PGRES_POLLING_READING ? .read : .write) { [self] in
                pollConnect(PQconnectPoll(pg), attempt)
            }
        default:
            attempt.done = true
            let message = errorMessage(pg)
            finishConnection()
            attempt.completion(.failure(PostgresError(.connectFailed, message)))
        }
    }

    /// Registers the persistent read watcher, the on-demand write watcher, the sync trigger and
    /// the watchdog for the ready connection.
    private func startWatching() {
        guard let pg = connection else { return }
        let socket = PQsocket(pg)
        reader = IOWatcher(loop: loop, descriptor: socket, interest: .read) { [unowned self] in onReadable() }
        writer = IOWatcher(loop: loop, descriptor: socket, interest: .write, persistent: false) { [unowned self] in flush() }
        syncTrigger = LoopTrigger(loop: loop) { [unowned self] in syncReads() }
        watchdogTimer = LoopTimer(loop: loop, repeating: true) { [unowned self] in watchdog() }
        reader?.arm()
        watchdogTimer?.arm(after: max(deadlines.stallThreshold / 2, Self.minWatchdogInterval))
    }

    /// The watchdog runs every half stall threshold, but not more often than this.
    static let minWatchdogInterval = Duration.milliseconds(5)

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
            // The query owns the continuation from here on: if a stopped loop drops it unanswered,
            // its deinit answers.
            let query = PendingQuery(command: command, continuation: continuation, deadline: deadline)
            // On the loop (the usual case) the query goes out now, without a closure to queue.
            if loop.isInLoopThread {
                start(query)
            } else {
                loop.execute { self.start(query) }
            }
        }
    }

    private func start(_ query: PendingQuery) {
        guard connection != nil, !isBroken else {
            query.answer(.failure(PostgresError(.connectionLost, "the connection is closed")))
            return
        }
        if wire.isEmpty { lastProgress = monotonicNanoseconds() }
        send(query)
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
        for query in segment where !query.answered && query.deadline <= now {
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
        // Reads of the head's segment that ran before it: their results wait for a check that
        // will come only after the blocked statement, so they run again elsewhere instead.
        for query in segment where query.isReadOnly {
            query.answer(.failure(PostgresError(.stalled, "its segment waits behind a blocked statement on \(head.resource)")))
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
                    syncTrigger?.fire()
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

    /// Ends the current segment of the pipeline with its check and a sync (`PQpipelineSync`
    /// also flushes).
    private func sync(_ pg: OpaquePointer) -> Bool {
        if checksSegments {
            let value = nextCheckValue
            nextCheckValue &+= 1
            guard sendCheck(pg, value) else { return false }
            wire.append(.check(value))
        }
        guard PQpipelineSync(pg) == 1 else { return false }
        wire.append(.sync(checked: checksSegments))
        return true
    }

    /// Sends the segment check: `value` as a binary int8, echoed back in binary.
    private func sendCheck(_ pg: OpaquePointer, _ value: UInt64) -> Bool {
        var bigEndian = value.bigEndian
        return withUnsafeBytes(of: &bigEndian) { bytes in
            var pointer: UnsafePointer<CChar>? = bytes.baseAddress!.assumingMemoryBound(to: CChar.self)
            var length = Int32(8)
            var format = Int32(1)
            return PQsendQueryPrepared(pg, Self.checkStatement, 1, &pointer, &length, &format, 1) == 1
        }
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
        case 1: writer?.arm()
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
                guard !inCommand, case .sync(let checked)? = wire.popFirst() else {
                    poison("a sync where \(wire.first?.expected ?? "nothing") was expected")
                    return
                }
                segmentEnded(checked: checked)
                continue
            }
            switch wire.first {
            case .check(let value)?:
                guard segmentCheck == nil else {
                    poison("a second result for the segment check")
                    return
                }
                if status == PGRES_PIPELINE_ABORTED {
                    segmentCheck = .aborted
                } else if let echoed = checkEcho(result), echoed == value {
                    segmentCheck = .passed
                } else {
                    poison("the segment check answered \(describeResult(result)), not its number")
                    return
                }
            case .command(let query, false)?:
                if let violation = query.takePrepareResult(result) {
                    poison(violation)
                    return
                }
            case .command(let query, true)?:
                if status == PGRES_PIPELINE_ABORTED {
                    query.aborted = true
                } else if let violation = query.collector.add(result, expecting: query.statement) {
                    poison(violation)
                    return
                } else if let error = query.collector.error, let violation = sessionViolation(error, query, pg) {
                    poison(violation)
                    return
                }
            case .sync?, nil:
                poison("\(describeResult(result)) that nobody asked for")
                return
            }
            inCommand = true
        }
        if let pg = connection, PQstatus(pg) == CONNECTION_BAD {
            let error = wire.lazy.compactMap { $0.query?.collector.error }.first
            connectionFailed(PostgresError(.connectionLost, errorMessage(pg), sqlState: error?.sqlState))
        }
    }

    /// The command at the head of the wire has all its results.
    private func commandFinished() {
        guard case .command(let query, let last)? = wire.popFirst() else { return }  // or the check
        guard last else {
            // Its PREPARE; the execution follows. A PREPARE that failed (or was cancelled)
            // left nothing prepared, whatever becomes of the query.
            guard let error = query.prepareError, case .prepared(let statement, _) = query.command else { return }
            if error.sqlState == "42P05" {
                query.prepareError = nil  // it exists already: as good as prepared
            } else if prepared[statement.name] == query.preparation {
                prepared[statement.name] = nil
            }
            return
        }
        if !query.answered { segment.append(query) }  // else timed out: its results are dropped
    }

    /// The sync closing a segment arrived: its statements are answered, if its check (when it
    /// `checked`) came back right. In a segment that failed part-way (check skipped) the errors
    /// are answered, and the reads that succeeded or were skipped run again: nothing vouches
    /// for their results.
    private func segmentEnded(checked: Bool) {
        let check = segmentCheck
        segmentCheck = nil
        if checked {
            // Poisoned with the segment intact, so that every query in it is answered.
            guard let check else {
                poison("a sync without its segment check")
                return
            }
            if check == .aborted, segment.contains(where: { !$0.isReadOnly && !$0.aborted && $0.collector.error == nil }) {
                poison("a write succeeded in a segment whose check was skipped")
                return
            }
        }
        let queries = segment
        segment.removeAll()
        let verified = !checked || check == .passed
        var again: [PendingQuery] = []
        for query in queries {
            if query.collector.error != nil || (verified && !query.aborted) {
                finish(query)
            } else if query.isReadOnly {
                again.append(query)  // skipped, or its result is not vouched for: it runs again
            } else {
                query.answer(.failure(PostgresError(.connectionLost, "the server skipped the statement")))
            }
        }
        // Sent again only now: before this sync, libpq would report them skipped again at once.
        for query in again where !query.answered {
            query.aborted = false
            query.collector = ResultCollector()
            query.resends += 1
            if query.resends > Self.maxResends {
                query.answer(.failure(PostgresError(.connectionLost, "a read was skipped \(Self.maxResends) times by failures before it")))
            } else {
                send(query)
            }
        }
    }

    /// An error that says the session is not the one this connection set up: libpq found the
    /// protocol broken, a statement prepared here is gone (a pooler handed over another
    /// backend, or DISCARD ALL ran), or the session sits in a failed transaction (this
    /// connection never lets a statement run inside one: a transaction's body stops at its
    /// first error and rolls back).
    private func sessionViolation(_ error: PostgresError, _ query: PendingQuery, _ pg: OpaquePointer) -> String? {
        switch error.sqlState {
        case nil where PQstatus(pg) == CONNECTION_OK: "libpq: \(error.message)"
        case "26000" where query.prepareError == nil: "\(query.statement?.name ?? "a statement") prepared on this connection is gone from the server"
        case "25P02": "the session is inside a failed transaction this connection did not leave it in"
        default: nil
        }
    }

    /// The connection answered out of turn or out of shape: it is closed, and nothing it
    /// answered in this segment reaches a caller.
    private func poison(_ what: String) {
        connectionFailed(PostgresError(.protocolViolation, what))
    }

    /// Resumes the caller with the query's rows or its first error.
    private func finish(_ query: PendingQuery) {
        if let error = query.prepareError {
            query.answer(.failure(error))  // its execution failed for want of the statement
        } else if let error = query.collector.error {
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
        var failed = segment
        var seen = Set(failed.map(ObjectIdentifier.init))
        for item in wire {
            if let query = item.query, seen.insert(ObjectIdentifier(query)).inserted { failed.append(query) }
        }
        wire.removeAll()
        segment.removeAll()
        segmentCheck = nil
        unsyncedReads = 0
        readBatchOpen.store(false, ordering: .relaxed)
        for query in failed {
            // A server error that came before the connection broke says more, unless the
            // connection was poisoned: then nothing it sent is believed.
            let cause = error.kind == .protocolViolation ? nil : query.collector.error
            query.answer(.failure(PostgresError(error.kind, cause?.message ?? error.message, sqlState: cause?.sqlState)))
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
        reader?.cancel()
        writer?.cancel()
        syncTrigger?.cancel()
        watchdogTimer?.cancel()
        reader = nil
        writer = nil
        syncTrigger = nil
        watchdogTimer = nil
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
/// command it sent. Its caller is answered exactly once: by `answer`, or by its deinit if it is
/// ever dropped unanswered (counted in `PostgresConnection.reclaimedQueries`, which tests expect
/// to stay zero).
private final class PendingQuery: @unchecked Sendable {  // made by the caller, then touched only on the connection's loop thread
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
    /// Its PREPARE's result came in.
    private var prepareAnswered = false
    /// Why its PREPARE failed.
    var prepareError: PostgresError?
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

    deinit {
        guard !answered else { return }
        PostgresConnection.reclaimedQueries.add(1, ordering: .relaxed)
        continuation.resume(throwing: PostgresError(.connectionLost, "the query was dropped unanswered"))
    }

    /// Takes the result of its PREPARE; returns what is wrong when it cannot be that.
    func takePrepareResult(_ result: OpaquePointer) -> String? {
        guard !prepareAnswered else { return "a second result for a PREPARE" }
        prepareAnswered = true
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK where String(cString: PQcmdStatus(result)).isEmpty:  // ParseComplete has no tag
            return nil
        case PGRES_FATAL_ERROR:
            prepareError = serverError(result)
            return prepareError?.sqlState == nil ? "libpq: \(prepareError?.message ?? "")" : nil
        case PGRES_PIPELINE_ABORTED:
            prepareError = PostgresError(.connectionLost, "the PREPARE was skipped")
            return nil
        default:
            return "\(describeResult(result)) for a PREPARE"
        }
    }

    /// The statement it executes (nil for simple SQL).
    var statement: PreparedStatement? {
        if case .prepared(let statement, _) = command { return statement }
        return nil
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

/// What the server will answer next: a command of a query, a segment's check, or a sync.
private enum WireItem {
    /// `last` is false for a PREPARE sent ahead of the query's execution.
    case command(PendingQuery, last: Bool)
    /// The segment check echoing this number.
    case check(UInt64)
    /// `checked`: a check was sent ahead of it.
    case sync(checked: Bool)

    var query: PendingQuery? {
        if case .command(let query, _) = self { return query }
        return nil
    }

    /// For a log line: what was expected here.
    var expected: String {
        switch self {
        case .command(let query, let last): "a result of \(query.statement?.name ?? "a simple query")\(last ? "" : " (its PREPARE)")"
        case .check: "the segment check"
        case .sync: "a sync"
        }
    }
}

/// What a segment's check answered.
private enum SegmentCheck {
    /// Its number came back: the segment's results are this connection's, in order.
    case passed
    /// It was skipped: a statement before it failed.
    case aborted
}

/// Rows and the first error of the results of one query.
private struct ResultCollector {
    var rows: PostgresRows?
    var error: PostgresError?

    /// Takes one result of the query; returns what is wrong when it cannot be this statement's
    /// (a second result, or one of another shape).
    mutating func add(_ result: OpaquePointer, expecting statement: PreparedStatement?) -> String? {
        guard rows == nil && error == nil else { return "a second result for \(statement?.name ?? "a simple query")" }
        switch PQresultStatus(result) {
        case PGRES_TUPLES_OK, PGRES_COMMAND_OK:
            let tagged = Int(String(cString: PQcmdTuples(result)))  // rows the command tag counts
            if let statement, let shape = statement.shape,
               let mismatch = shape.mismatch(result, taggedRows: tagged, atMostOneRow: statement.returnsAtMostOneRow) {
                return "\(statement.name) answered with \(mismatch)"
            }
            rows = copyRows(result, affectedRows: tagged ?? 0)
        case PGRES_EMPTY_QUERY:
            rows = .empty
        case PGRES_FATAL_ERROR, PGRES_NONFATAL_ERROR:
            error = serverError(result)
        default:
            return "a result of status \(String(cString: PQresStatus(PQresultStatus(result)))) for \(statement?.name ?? "a simple query")"
        }
        return nil
    }
}

/// The number a segment check's result echoes, if it has the check's shape.
private func checkEcho(_ result: OpaquePointer) -> UInt64? {
    guard PQresultStatus(result) == PGRES_TUPLES_OK, PQntuples(result) == 1, PQnfields(result) == 1,
          PQftype(result, 0) == PostgresType.int8, PQfformat(result, 0) == 1, PQgetlength(result, 0, 0) == 8,
          let value = PQgetvalue(result, 0, 0) else { return nil }
    var echoed: UInt64 = 0
    for index in 0..<8 { echoed = echoed << 8 | UInt64(UInt8(bitPattern: value[index])) }
    return echoed
}

/// A result in a few words, for the warning that poisons a connection.
private func describeResult(_ result: OpaquePointer) -> String {
    let status = String(cString: PQresStatus(PQresultStatus(result)))
    return "a \(status) result (\(PQnfields(result)) columns, \(PQntuples(result)) rows, \"\(String(cString: PQcmdStatus(result)))\")"
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

/// A non-negative `Duration` in nanoseconds.
func nanoseconds(_ duration: Duration) -> UInt64 {
    let (seconds, attoseconds) = duration.components
    return UInt64(max(0, seconds)) * 1_000_000_000 + UInt64(max(0, attoseconds) / 1_000_000_000)
}

private func copyRows(_ result: OpaquePointer, affectedRows: Int) -> PostgresRows {
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
    return PostgresRows(columns: columns, types: types, isBinary: isBinary, bytes: bytes, cells: cells, affectedRows: affectedRows)
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
