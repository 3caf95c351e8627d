import Database
import EventLoopCore

/// A task list read from a PostgreSQL cursor in a transaction of its own (one snapshot): a task
/// holds the connection, DECLAREs, and then runs one FETCH per `next()` the reader asks for. The
/// transaction ends after the last batch, after a failure, or when the cursor is dropped (the
/// reader gave up); each FETCH has the query timeout.
final class PostgresListCursor: TaskListCursor {
    /// What the reader asks for: the next batch, answered through the continuation.
    private typealias Request = CheckedContinuation<[TaskItem]?, Error>
    private let requests: AsyncStream<Request>.Continuation
    /// Set by the connection's task before it answers its last request: later `next()` calls
    /// are answered here, never sent to a task that has stopped listening.
    private let ending: LockedValue<Result<Void, Error>?>

    private init(requests: AsyncStream<Request>.Continuation, ending: LockedValue<Result<Void, Error>?>) {
        self.requests = requests
        self.ending = ending
    }

    deinit {
        requests.finish()
    }

    func next() async throws -> [TaskItem]? {
        if let ended = ending.withLock({ $0 }) {
            try ended.get()
            return nil
        }
        return try await withCheckedThrowingContinuation { request in
            if case .terminated = requests.yield(request) {
                request.resume(throwing: PostgresError(.connectionLost, "the list's transaction has ended"))
            }
        }
    }

    /// Opens the transaction and the cursor; returns once the DECLARE succeeded.
    static func open(
        _ pool: ConnectionPool, declare: PreparedStatement, parameters: [PostgresValue], fetch: PreparedStatement, batchRows: Int
    ) async throws -> PostgresListCursor {
        let (stream, requests) = AsyncStream.makeStream(of: Request.self)
        let ending = LockedValue<Result<Void, Error>?>(nil)
        try await withCheckedThrowingContinuation { (opened: CheckedContinuation<Void, Error>) in
            Task {
                let declared = LockedValue(false)
                do {
                    try await pool.withTransaction { connection in
                        _ = try await connection.query(declare, parameters)
                        declared.withLock { $0 = true }
                        opened.resume()
                        for await request in stream {
                            do {
                                let batch = try TaskColumns.decodeAll(try await connection.query(fetch))
                                guard batch.count == batchRows else {
                                    ending.withLock { $0 = .success(()) }
                                    request.resume(returning: batch.isEmpty ? nil : batch)
                                    return
                                }
                                request.resume(returning: batch)
                            } catch {
                                ending.withLock { $0 = .failure(error) }
                                request.resume(throwing: error)
                                throw error
                            }
                        }
                    }
                } catch {
                    if !declared.withLock({ $0 }) { opened.resume(throwing: error) }
                }
                requests.finish()
                // A request sent just as the task stopped listening is answered too (one consumer
                // at a time: the loop above has ended).
                for await request in stream { request.resume(returning: nil) }
            }
        }
        return PostgresListCursor(requests: requests, ending: ending)
    }
}
