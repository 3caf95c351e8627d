import EventLoopCore
import Logging
import Metrics

/// A bounded pool of PostgreSQL connections. An actor around `PoolStateMachine`: it feeds the
/// machine events and performs the actions it returns. Connections are lent only inside
/// `withConnection { }` and `withTransaction { }`, and always come back.
public actor ConnectionPool {
    private var state: PoolStateMachine
    let configuration: PoolConfiguration
    /// The loops connections run on; a query prefers a connection on its caller's loop.
    let loops: EventLoopGroup
    /// The pool made `loops` itself, so it stops them at shutdown.
    private let ownsLoops: Bool
    /// A thread of its own for starting connections (host name lookups block).
    let connector: EventLoop
    /// A thread of its own for cancel requests (`PQcancel` connects and waits).
    let canceller: EventLoop
    let logger: Logger
    private let clock = ContinuousClock()
    private let origin: ContinuousClock.Instant
    private var connections: [Int: PostgresConnection] = [:]
    private var waiters: [Int: LeaseRequest] = [:]
    private var nextWaiterID = 0
    /// Per loop (group), the connection its last one-row read went to: while that read's batch
    /// waits for its sync, the loop's next one-row reads join it.
    private var lastOneRowRead: [Int?]
    /// The single timer task and the deadline it sleeps until.
    private var timer: (task: Task<Void, Never>, deadline: Duration)?
    private var shutdownWaiters: [CheckedContinuation<Void, Never>] = []
    private let metrics = PoolMetrics()

    /// A pool whose connections run on `eventLoops` (shared, e.g. with the HTTP server, and left
    /// running at shutdown), or on one loop of its own when nil.
    public init(configuration: PoolConfiguration, logger: Logger, eventLoops: EventLoopGroup? = nil) {
        self.configuration = configuration
        self.logger = logger
        self.origin = clock.now
        self.loops = eventLoops ?? EventLoopGroup(count: 1, namePrefix: "postgres-loop")
        self.ownsLoops = eventLoops == nil
        self.lastOneRowRead = Array(repeating: nil, count: self.loops.loops.count)
        self.connector = EventLoop(name: "pg-connect")
        self.canceller = EventLoop(name: "pg-cancel")
        self.state = PoolStateMachine(configuration: .init(
            maxConnections: max(1, configuration.maxConnections),
            minConnections: min(configuration.minConnections, max(1, configuration.maxConnections)),
            maxWaiters: configuration.maxWaiters, acquireTimeout: configuration.acquireTimeout,
            maxSharedPerConnection: max(1, configuration.pipelineDepth),
            maxLookupsPerConnection: max(1, configuration.pipelineDepth, configuration.lookupPipelineDepth),
            initialBackoff: configuration.initialBackoff, maxBackoff: configuration.maxBackoff,
            affinityGroups: loops.loops.count, quarantineHold: max(configuration.stallThreshold * 2, .seconds(1))
        ))
        loops.start()
        connector.start()
        canceller.start()
    }

    /// Opens the minimum connections in the background.
    public func start() {
        perform(state.start())
    }

    // MARK: Lending

    /// Lends a connection to `body` and takes it back afterwards, whatever happens.
    public nonisolated func withConnection<Result: Sendable>(
        _ body: (PostgresConnection) async throws -> Result
    ) async throws -> Result {
        let connection = try await lease(.exclusive, group: loops.currentIndex)
        do {
            let result = try await body(connection)
            await release(connection)
            return result
        } catch {
            await release(connection)
            throw error
        }
    }

    /// Runs one statement outside any transaction. It shares a connection with other such
    /// queries (libpq pipeline mode), so it costs neither a connection of its own nor a round trip
    /// of waiting for the queries before it.
    /// `timeout` replaces the configured query timeout for this statement.
    public nonisolated func query(_ statement: PreparedStatement, _ binds: [PostgresValue] = [], timeout: Duration? = nil) async throws -> PostgresRows {
        try await query(statement, binds, timeout: timeout, group: loops.currentIndex)
    }

    /// Lease, query and release in one visit to the pool (one hop on, one off; the pool is free
    /// for others while the query is in flight). `group` is the caller's loop, taken before the hop.
    private func query(_ statement: PreparedStatement, _ binds: [PostgresValue], timeout: Duration?, group: Int?) async throws -> PostgresRows {
        let kind: PoolStateMachine.LeaseKind = statement.isReadOnly ? .shared : .sharedWrite
        let connection = try await lease(
            kind, group: group, joiningBatch: statement.isReadOnly && statement.returnsAtMostOneRow, resource: statement.resource
        )
        var attempt = connection
        var retries = 0
        // Retries share the first attempt's deadline: a request's time in PostgreSQL is bounded
        // by its query timeout however often its read is moved.
        let deadline = connection.deadline(after: timeout)
        while true {
            do {
                defer { release(attempt, kind: kind) }
                let result = await attempt.result(statement, binds, deadline: deadline)
                // `make faults` found the actor's code running off the actor here when the
                // await threw (see `PostgresConnection.result`). Checked in debug builds only: the
                // release check showed in a lookup's server CPU (docs/PERFORMANCE.md, issue 14).
                assertIsolated("a query resumed off the pool actor")
                return try result.get()
            } catch let error as PostgresError where statement.isReadOnly && retries < readRetries(after: error.kind) {
                // A read that never ran (queued behind a blocked statement), or whose connection
                // was poisoned, runs again elsewhere. Writes never run twice.
                retries += 1
                let next = try await lease(kind, group: group, resource: statement.resource, avoiding: attempt.id)
                guard monotonicNanoseconds() < deadline else {
                    release(next, kind: kind)
                    throw error
                }
                attempt = next
            }
        }
    }

    /// How often a read is run again on another connection after failing with `kind`: when it
    /// was queued behind a blocked statement (so never ran), once per connection the pool may
    /// open (while a table is locked, every connection can have a blocked statement at its head
    /// before its stall is noticed; every try shares the read's one deadline); once when its
    /// connection was poisoned.
    private func readRetries(after kind: PostgresError.Kind) -> Int {
        switch kind {
        case .stalled: configuration.maxConnections
        case .protocolViolation: 1
        default: 0
        }
    }

    /// Runs `body` inside BEGIN/COMMIT; rolls back when it throws.
    public nonisolated func withTransaction<Result: Sendable>(
        _ body: (PostgresConnection) async throws -> Result
    ) async throws -> Result {
        try await withConnection { connection in
            _ = try await connection.simpleQuery("BEGIN")
            let result: Result
            do {
                result = try await body(connection)
            } catch {
                if !connection.isBroken { _ = try? await connection.simpleQuery("ROLLBACK") }
                throw error
            }
            _ = try await connection.simpleQuery("COMMIT")
            return result
        }
    }

    /// A connection for the caller: at once when one is free (no continuation, no suspension
    /// beyond the hop onto the actor), else after waiting in line.
    /// `joiningBatch` (a one-row read) prefers the connection holding its loop's open batch.
    private func lease(
        _ kind: PoolStateMachine.LeaseKind, group: Int?, joiningBatch: Bool = false, resource: String? = nil,
        avoiding: Int? = nil
    ) async throws -> PostgresConnection {
        let id = nextWaiterID
        nextWaiterID += 1
        let openBatch = joiningBatch ? group.flatMap(openOneRowBatch) : nil
        let actions = state.leaseRequested(
            id, kind: kind, group: group, openBatch: openBatch, resource: resource, avoiding: avoiding, lookup: joiningBatch, now: now
        )
        if actions.count == 1, case .fail(id, let error) = actions[0] {
            metrics.recordError(error.kind)
            throw error
        }
        if actions.count == 1, case .lease(let connectionID, id, let waited) = actions[0], let connection = connections[connectionID] {
            metrics.recordWait(waited)
            if joiningBatch, let group { lastOneRowRead[group] = connectionID }
            return connection
        }
        // The request is registered, and its actions performed, before anything can suspend: an
        // answer that comes before the continuation exists is kept for it (an `await` on the
        // actor may let other work in, and that work may answer this request).
        let request = LeaseRequest()
        waiters[id] = request
        perform(actions)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                request.attach(continuation)
            }
        } onCancel: {
            Task { await self.cancelWaiter(id) }
        }
    }

    /// The connection the last one-row read of `group`'s loop went to, if that read still waits
    /// for its sync (the flag is exact on the connection's own loop, a hint elsewhere).
    private func openOneRowBatch(_ group: Int) -> Int? {
        guard group < lastOneRowRead.count, let id = lastOneRowRead[group], connections[id]?.hasOpenReadBatch == true else { return nil }
        return id
    }

    private func release(_ connection: PostgresConnection, kind: PoolStateMachine.LeaseKind = .exclusive) {
        perform(state.connectionReleased(connection.id, kind: kind, reusable: !connection.isBroken, now: now))
    }

    private func cancelWaiter(_ id: Int) {
        if state.waiterCancelled(id), let request = waiters.removeValue(forKey: id) {
            request.answer(.failure(CancellationError()))
        }
    }

    // MARK: State

    /// Current gauges.
    public var statistics: PoolStatistics {
        PoolStatistics(
            open: state.openCount, inUse: state.leasedCount, idle: state.idleCount, waiting: state.waiterCount,
            connecting: state.connectingCount, reachable: state.isReachable, stalled: state.stalledCount
        )
    }

    /// Stops lending, waits up to `gracePeriod` for leases to come back, closes every connection.
    public func shutdown(gracePeriod: Duration) async {
        perform(state.shutdown())
        if !state.isShutDownComplete {
            let deadline = clock.now + gracePeriod
            let waitTask = Task { try? await Task.sleep(until: deadline, clock: .continuous); self.finishShutdown() }
            await withCheckedContinuation { shutdownWaiters.append($0) }
            waitTask.cancel()
        }
        for connection in connections.values { connection.close() }
        connections.removeAll()
        timer?.task.cancel()
        timer = nil
        if ownsLoops { await loops.stop() }
        await connector.stop()
        await canceller.stop()
    }

    private func finishShutdown() {
        let pending = shutdownWaiters
        shutdownWaiters.removeAll()
        pending.forEach { $0.resume() }
    }

    // MARK: Performing actions

    private var now: Duration { clock.now - origin }

    private func perform(_ actions: [PoolStateMachine.Action]) {
        for action in actions {
            switch action {
            case .lease(let connectionID, let waiterID, let waited):
                guard let request = waiters.removeValue(forKey: waiterID) else {
                    // The waiter was cancelled meanwhile: give the lease straight back.
                    perform(state.connectionReleased(connectionID, kind: .shared, reusable: connections[connectionID] != nil, now: now))
                    continue
                }
                guard let connection = connections[connectionID] else {
                    logger.warning("lease of an unknown connection; failing the request", metadata: ["connection": "\(connectionID)"])
                    request.answer(.failure(PostgresError(.connectionLost, "the connection is gone")))
                    perform(state.connectionReleased(connectionID, kind: .shared, reusable: false, now: now))
                    continue
                }
                metrics.recordWait(waited)
                request.answer(.success(connection))
            case .cancelHead(let connectionID):
                connections[connectionID]?.cancelStalledHead()
            case .fail(let waiterID, let error):
                metrics.recordError(error.kind)
                waiters.removeValue(forKey: waiterID)?.answer(.failure(error))
            case .connect(let connectionID):
                openConnection(connectionID)
            case .close(let connectionID):
                connections.removeValue(forKey: connectionID)?.close()
            }
        }
        if state.isShutDownComplete { finishShutdown() }
        armTimer()
    }

    private func openConnection(_ id: Int) {
        let configuration = configuration
        let loop = loops.loops[state.group(of: id) % loops.loops.count]
        Task {
            do {
                let connection = try await PostgresConnection.connect(
                    id: id, conninfo: configuration.conninfo, applicationName: configuration.applicationName,
                    timeout: configuration.connectTimeout, loop: loop, starter: connector,
                    deadlines: .init(
                        queryTimeout: configuration.queryTimeout, stallThreshold: configuration.stallThreshold,
                        maxInFlight: PostgresConnection.inFlightPerDepth * max(configuration.pipelineDepth, configuration.lookupPipelineDepth) + 8
                    ),
                    transactionPooled: configuration.transactionPooling, canceller: canceller,
                    onStall: { [weak self] report in
                        Task { await self?.stallReported(id, report) }
                    },
                    onUnexpectedClose: { [weak self] error in
                        Task { await self?.connectionClosed(id, error: error) }
                    }
                )
                self.connected(id, connection)
            } catch {
                self.connectFailed(id, error: error as? PostgresError ?? PostgresError(.connectFailed, "\(error)"))
            }
        }
    }

    private func stallReported(_ id: Int, _ report: PostgresConnection.StallReport) {
        switch report {
        case .stalled(let resource):
            logger.warning("database connection stalled", metadata: ["connection": "\(id)", "resource": "\(resource)"])
            perform(state.connectionStalled(id, resource: resource, now: now))
        case .resumed:
            logger.info("database connection resumed", metadata: ["connection": "\(id)"])
            perform(state.connectionResumed(id, now: now))
        }
    }

    private func connected(_ id: Int, _ connection: PostgresConnection) {
        connections[id] = connection
        logger.debug("connection opened", metadata: ["connection": "\(id)"])
        perform(state.connectSucceeded(id, now: now))
    }

    private func connectFailed(_ id: Int, error: PostgresError) {
        logger.warning("cannot connect to PostgreSQL", metadata: ["error": "\(error)"])
        metrics.recordError(error.kind)
        perform(state.connectFailed(id, error: error, now: now))
    }

    private func connectionClosed(_ id: Int, error: PostgresError) {
        if error.kind == .protocolViolation {
            logger.warning("database connection poisoned and closed", metadata: ["connection": "\(id)", "error": "\(error.message)"])
        } else {
            logger.info("connection closed", metadata: ["connection": "\(id)", "error": "\(error)"])
        }
        metrics.recordError(error.kind)
        // Only an idle connection is dropped here; a leased one comes back through `release`.
        guard let actions = state.idleConnectionClosed(id) else { return }
        connections[id] = nil
        perform(actions)
    }

    /// Keeps one timer task sleeping until the state machine's next deadline.
    private func armTimer() {
        guard let deadline = state.nextDeadline else { return }
        if let timer, timer.deadline <= deadline { return }
        timer?.task.cancel()
        let instant = origin + deadline
        timer = (Task { [weak self] in
            try? await Task.sleep(until: instant, clock: .continuous)
            guard !Task.isCancelled else { return }
            await self?.timerFired()
        }, deadline)
    }

    private func timerFired() {
        timer = nil
        perform(state.timerFired(now: now))
    }

    /// Sets the pool's gauges (open, in use, idle, waiting) to their current values. Called by
    /// whoever exports metrics, just before exporting: keeping them current on every lease would
    /// cost every query.
    public func publishMetrics() {
        metrics.update(statistics)
    }
}

/// The pool's gauges, counters and wait-time histogram, through swift-metrics.
private struct PoolMetrics: Sendable {
    private let open = Gauge(label: "db_pool_connections_open")
    private let inUse = Gauge(label: "db_pool_connections_in_use")
    private let idle = Gauge(label: "db_pool_connections_idle")
    private let waiting = Gauge(label: "db_pool_waiters")
    private let waitTime = Metrics.Timer(label: "db_pool_acquire_wait_seconds", preferredDisplayUnit: .seconds)

    func update(_ statistics: PoolStatistics) {
        open.record(statistics.open)
        inUse.record(statistics.inUse)
        idle.record(statistics.idle)
        waiting.record(statistics.waiting)
    }

    func recordWait(_ waited: Duration) {
        waitTime.recordNanoseconds(Int64(waited.components.seconds) * 1_000_000_000 + Int64(waited.components.attoseconds / 1_000_000_000))
    }

    func recordError(_ kind: PostgresError.Kind) {
        Counter(label: "db_errors_total", dimensions: [("kind", kind.rawValue)]).increment()
    }
}
