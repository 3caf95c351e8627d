import CLibPQ
import EventLoopCore
import Glibc
import Synchronization

/// One PostgreSQL connection driven non-blocking by a libevent loop: the libpq glue around a
/// `PipelineStateMachine`, which makes every decision (what to send, when a statement is
/// answered, when the connection is poisoned, stalled or past a deadline). `PQsocket` is
/// watched by the loop, statements are sent with `PQsendPrepare`/`PQsendQueryPrepared` (behind
/// a transaction pooler, unnamed with `PQsendQueryParams`) in pipeline mode and flushed with `PQflush`, results read with `PQconsumeInput`/`PQisBusy`/
/// `PQgetResult`. Every libpq call happens on the loop thread, never on Swift's cooperative
/// threads; callers just `await`. `PQcancel` blocks, so it runs on the pool's canceller thread.
public final class PostgresConnection: @unchecked Sendable {  // libpq, libevent and machine state is touched only on `loop`'s thread; `broken` and `readBatchOpen` are atomic
    typealias Machine = PipelineStateMachine<PendingQuery, PostgresRows>
    typealias Deadlines = Machine.Deadlines

    /// A change in whether the connection is stalled, for the pool.
    enum StallReport: Sendable, Equatable {
        /// No progress for the stall threshold, behind a statement on `resource`.
        case stalled(resource: String)
        case resumed
    }

    /// The pool's id for this connection.
    public let id: Int
    let loop: EventLoop
    private let deadlines: Deadlines
    /// The thread `PQcancel` runs on (it connects to the server and waits).
    private let canceller: EventLoop
    var machine: Machine
    var connection: OpaquePointer?
    private var reader: IOWatcher?
    /// Armed while libpq has output the socket did not take.
    private var writer: IOWatcher?
    /// Sends the open read batch's sync once the loop's current turn has issued all it will.
    private var syncTrigger: LoopTrigger?
    /// Fires every half stall threshold while the connection is open.
    private var watchdogTimer: LoopTimer?
    /// Called on the loop thread when the connection becomes stalled or resumes.
    var onStall: (@Sendable (StallReport) -> Void)?
    /// Called once (on the loop thread) when the connection closes for any reason but `close()`.
    var onUnexpectedClose: (@Sendable (PostgresError) -> Void)?
    /// Called on the loop thread with each notification's payload (a LISTEN connection's).
    var onNotification: (@Sendable (String) -> Void)?
    private let broken = Atomic<Bool>(false)
    /// Mirrors `machine.hasOpenReadBatch` for the pool, which reads it from any thread.
    private let readBatchOpen = Atomic<Bool>(false)
    /// Queries dropped without an answer and answered by their deinit: a bug if ever above zero.
    static let reclaimedQueries = Atomic<Int>(0)
    /// The statement every segment ends with; it echoes its int8 parameter.
    static let checkStatement = "__segment_check"
    /// Statements on the wire, per unit of pipeline depth, beyond which a connection is recycled.
    static let inFlightPerDepth = 4
    /// The watchdog runs every half stall threshold, but not more often than this.
    static let minWatchdogInterval = Duration.milliseconds(5)

    /// The check's SQL when it cannot be prepared (behind a transaction pooler): parsed unnamed.
    static let unnamedCheckSQL = "SELECT $1::int8"

    init(id: Int, loop: EventLoop, deadlines: Deadlines, transactionPooled: Bool, canceller: EventLoop) {
        self.id = id
        self.loop = loop
        self.deadlines = deadlines
        self.canceller = canceller
        machine = Machine(deadlines: deadlines, transactionPooled: transactionPooled)
    }

    /// True once the connection has failed; it must not be used again.
    public var isBroken: Bool { broken.load(ordering: .relaxed) }

    /// True while reads sent in this turn of the loop wait for their sync: another read joining
    /// them costs no packet and no PostgreSQL wake-up of its own. A hint when read off the loop.
    var hasOpenReadBatch: Bool { readBatchOpen.load(ordering: .relaxed) }

    /// Registers the persistent read watcher, the on-demand write watcher, the sync trigger and
    /// the watchdog for the ready connection.
    func startWatching() {
        guard let pg = connection else { return }
        let socket = PQsocket(pg)
        reader = IOWatcher(loop: loop, descriptor: socket, interest: .read) { [unowned self] in onReadable() }
        writer = IOWatcher(loop: loop, descriptor: socket, interest: .write, persistent: false) { [unowned self] in flush() }
        syncTrigger = LoopTrigger(loop: loop) { [unowned self] in perform(machine.endOfTurn()) }
        watchdogTimer = LoopTimer(loop: loop, repeating: true) { [unowned self] in perform(machine.tick(now: monotonicNanoseconds())) }
        reader?.arm()
        watchdogTimer?.arm(after: max(deadlines.stallThreshold / 2, Self.minWatchdogInterval))
    }

    // MARK: Queries

    /// Runs a prepared statement (prepared here on first use) with `binds`; resumes with its rows,
    /// or `.queryTimeout` after `timeout` (the connection's query timeout when nil).
    public func query(_ statement: PreparedStatement, _ binds: [PostgresValue] = [], timeout: Duration? = nil) async throws -> PostgresRows {
        try await result(statement, binds, deadline: deadline(after: timeout)).get()
    }

    /// `query`, with its failure as a value rather than thrown. The pool awaits this one inside
    /// its actor: awaiting the throwing `query` there, the actor's code after a failed query was
    /// found running off the actor (a `preconditionIsolated` fired under the fault proxy),
    /// racing with the actor's other work; a value-returning await resumed correctly.
    /// `deadline` is on `monotonicNanoseconds()`'s clock (see `deadline(after:)`).
    func result(_ statement: PreparedStatement, _ binds: [PostgresValue], deadline: UInt64) async -> Result<PostgresRows, Error> {
        let parameters: [[CChar]?]
        do {
            parameters = try binds.map { try $0.encoded() }
        } catch {
            return .failure(error)
        }
        return await enqueue(.prepared(statement, parameters), deadline: deadline)
    }

    /// Runs one SQL statement without parameters (BEGIN, COMMIT, DDL…).
    public func simpleQuery(_ sql: String) async throws -> PostgresRows {
        guard !sql.utf8.contains(0) else { throw PostgresError(.invalidValue, "SQL contains a NUL byte") }
        return try await enqueue(.simple(sql), deadline: deadline(after: nil)).get()
    }

    /// When a query started now must be answered: after `timeout`, or the connection's query timeout.
    func deadline(after timeout: Duration?) -> UInt64 {
        monotonicNanoseconds() + nanoseconds(timeout ?? deadlines.queryTimeout)
    }

    private func enqueue(_ command: PendingQuery.Command, deadline: UInt64) async -> Result<PostgresRows, Error> {
        return await withCheckedContinuation { continuation in
            // The query owns the continuation from here on: if a stopped loop drops it unanswered,
            // its deinit answers.
            let query = PendingQuery(command: command, continuation: continuation)
            // On the loop (the usual case) the query goes out now.
            loop.runOnLoop { self.start(query, deadline: deadline) }
        }
    }

    private func start(_ query: PendingQuery, deadline: UInt64) {
        guard connection != nil else {
            query.answer(.failure(PostgresError(.connectionLost, "the connection is closed")))
            return
        }
        perform(machine.enqueue(query, query.machineCommand, deadline: deadline, now: monotonicNanoseconds()))
    }

    /// The pool found another connection already stalled behind the same resource: the head
    /// statement here is answered `.stalled` and cancelled, so this connection serves again.
    func cancelStalledHead() {
        loop.execute { [self] in perform(machine.cancelStalledHead(now: monotonicNanoseconds())) }
    }

    // MARK: Carrying out the machine's actions

    /// Performs `actions` in order. A send that fails fails the connection (the machine answers
    /// everything in flight); the sends after it find the connection gone and do nothing, while
    /// the answers among them are still given.
    private func perform(_ actions: [Machine.Action]) {
        var closedWith: PostgresError?
        for action in actions {
            switch action {
            case .sendPrepare(let query):
                guard let pg = connection, let statement = query.statement else { continue }
                if PQsendPrepare(pg, statement.name, statement.sql, 0, nil) != 1 { sendFailed(pg) }
            case .sendExecute(let query):
                guard let pg = connection else { continue }
                if sendExecution(pg, query) != 1 { sendFailed(pg) }
            case .sendCheck(let value):
                guard let pg = connection else { continue }
                if !sendCheck(pg, value) { sendFailed(pg) }
            case .sendSync:
                guard let pg = connection else { continue }
                if PQpipelineSync(pg) != 1 { sendFailed(pg) }
            case .scheduleSync:
                syncTrigger?.fire()
            case .flush:
                flush()
            case .answer(let query, let result):
                query.answer(result.map { $0 ?? .empty }.mapError { $0 })
            case .cancel:
                guard let pg = connection, let handle = PQgetCancel(pg) else { continue }
                let request = CancelRequest(handle)
                canceller.execute { request.send() }
            case .reportStall(let report):
                onStall?(report)
            case .close(let error):
                finishConnection()
                closedWith = error
            }
        }
        readBatchOpen.store(machine.hasOpenReadBatch, ordering: .relaxed)
        if let closedWith {
            onStall = nil
            let callback = onUnexpectedClose
            onUnexpectedClose = nil
            callback?(closedWith)
        }
    }

    private func sendFailed(_ pg: OpaquePointer) {
        perform(machine.fail(PostgresError(.connectionLost, errorMessage(pg))))
    }

    private func sendExecution(_ pg: OpaquePointer, _ query: PendingQuery) -> Int32 {
        switch query.command {
        case .simple(let sql):
            return PQsendQueryParams(pg, sql, 0, nil, nil, nil, nil, 0)
        case .prepared(let statement, let parameters):
            var pointers: [UnsafeMutablePointer<CChar>?] = parameters.map { value in
                guard let value else { return nil }
                let copy = UnsafeMutablePointer<CChar>.allocate(capacity: value.count)
                copy.initialize(from: value, count: value.count)
                return copy
            }
            defer { pointers.forEach { $0?.deallocate() } }
            let count = Int32(parameters.count)
            let resultFormat: Int32 = statement.binaryResults ? 1 : 0
            let unnamed = machine.transactionPooled
            return pointers.withUnsafeMutableBufferPointer { buffer in
                buffer.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: max(1, buffer.count)) { values in
                    let values = parameters.isEmpty ? nil : values
                    return unnamed
                        ? PQsendQueryParams(pg, statement.sql, count, nil, values, nil, nil, resultFormat)
                        : PQsendQueryPrepared(pg, statement.name, count, values, nil, nil, resultFormat)
                }
            }
        }
    }

    /// Sends the segment check: `value` as a binary int8, echoed back in binary.
    private func sendCheck(_ pg: OpaquePointer, _ value: UInt64) -> Bool {
        var bigEndian = value.bigEndian
        return withUnsafeBytes(of: &bigEndian) { bytes in
            var pointer: UnsafePointer<CChar>? = bytes.baseAddress!.assumingMemoryBound(to: CChar.self)
            var length = Int32(8)
            var format = Int32(1)
            guard machine.transactionPooled else {
                return PQsendQueryPrepared(pg, Self.checkStatement, 1, &pointer, &length, &format, 1) == 1
            }
            var type = PostgresType.int8
            return PQsendQueryParams(pg, Self.unnamedCheckSQL, 1, &type, &pointer, &length, &format, 1) == 1
        }
    }

    /// Pushes buffered output; keeps write interest while libpq still has some.
    private func flush() {
        guard let pg = connection else { return }
        switch PQflush(pg) {
        case 0: break
        case 1: writer?.arm()
        default: perform(machine.fail(PostgresError(.connectionLost, errorMessage(pg))))
        }
    }

    // MARK: Reading

    /// Reads what arrived and hands every result to the machine. Each command's results end
    /// with a NULL from `PQgetResult`; a sync answers with `PGRES_PIPELINE_SYNC`; two NULLs in a
    /// row mean nothing more is ready.
    private func onReadable() {
        guard let pg = connection else { return }
        guard PQconsumeInput(pg) == 1 else {
            perform(machine.fail(PostgresError(.connectionLost, errorMessage(pg))))
            return
        }
        machine.progress(now: monotonicNanoseconds())
        deliverNotifications(pg)
        var previousWasNull = false
        while let pg = connection, PQisBusy(pg) == 0 {
            guard let result = PQgetResult(pg) else {
                if machine.inCommand {
                    machine.commandEnded()
                } else if previousWasNull {
                    break
                }
                previousWasNull = true
                continue
            }
            previousWasNull = false
            defer { PQclear(result) }
            if PQresultStatus(result) == PGRES_PIPELINE_SYNC {
                perform(machine.syncReceived())
            } else {
                perform(machine.received(PostgresResult.classify(result, expected: machine.expected, connectionOK: PQstatus(pg) == CONNECTION_OK)))
            }
        }
        if let pg = connection { deliverNotifications(pg) }  // parsed while results were read
        if let pg = connection, PQstatus(pg) == CONNECTION_BAD {
            let error = machine.firstServerError
            perform(machine.fail(PostgresError(.connectionLost, errorMessage(pg), sqlState: error?.sqlState)))
        }
    }

    /// Hands every notification libpq has read to `onNotification` (dropped when none is set).
    private func deliverNotifications(_ pg: OpaquePointer) {
        while let notification = PQnotifies(pg) {
            let payload = String(cString: notification.pointee.extra)
            PQfreemem(notification)
            onNotification?(payload)
        }
    }

    // MARK: Closing

    func finishConnection() {
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
            perform(machine.fail(PostgresError(.connectionLost, "the connection was closed")))
            finishConnection()  // also when the machine never started (a failed connect)
        }
    }
}
