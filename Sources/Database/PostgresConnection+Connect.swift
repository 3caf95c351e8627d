import CLibPQ
import EventLoopCore

// Opening a connection: started on the connector thread, polled to the end on its loop, then the
// session set up (UTC, the segment check prepared) before it serves.
extension PostgresConnection {

    /// Opens a connection to `conninfo` (a URL or `key=value` string, anything libpq accepts)
    /// within `timeout`, then sets the session time zone to UTC. The connection is started on
    /// `starter`, a thread that does nothing else (`PQconnectStartParams` resolves host names
    /// synchronously, and a slow DNS answer must not stall a loop that serves requests), and
    /// then driven on `loop`.
    static func connect(
        id: Int, conninfo: String, applicationName: String, timeout: Duration, loop: EventLoop, starter: EventLoop,
        deadlines: Deadlines, transactionPooled: Bool, canceller: EventLoop,
        onStall: @escaping @Sendable (StallReport) -> Void,
        onUnexpectedClose: @escaping @Sendable (PostgresError) -> Void,
        onNotification: (@Sendable (String) -> Void)? = nil
    ) async throws -> PostgresConnection {
        let connection = PostgresConnection(
            id: id, loop: loop, deadlines: deadlines, transactionPooled: transactionPooled, canceller: canceller
        )
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
            // PgBouncer carries TimeZone over to whichever backend serves the next transaction.
            _ = try await connection.simpleQuery("SET TIME ZONE 'UTC'")
            if !transactionPooled {
                do {
                    _ = try await connection.simpleQuery("PREPARE \(checkStatement) (int8) AS SELECT $1")
                } catch let error as PostgresError where error.sqlState == "42P05" {
                    // Already prepared in this session (a session pooler handed over a used one): a
                    // different definition would fail every check and poison the connection.
                }
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
                connection.machine.startCheckingSegments()
                connection.onUnexpectedClose = onUnexpectedClose
                connection.onStall = onStall
                connection.onNotification = onNotification
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
}
