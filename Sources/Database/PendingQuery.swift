import Synchronization

/// A query waiting for its answer: what to send, and its caller. Its caller is answered exactly
/// once: by `answer`, or by its deinit if it is ever dropped unanswered (counted in
/// `PostgresConnection.reclaimedQueries`, which tests expect to stay zero).
final class PendingQuery: @unchecked Sendable {  // made by the caller, then touched only on the connection's loop thread
    enum Command {
        case simple(String)
        case prepared(PreparedStatement, [[CChar]?])
    }
    let command: Command
    private let continuation: CheckedContinuation<Result<PostgresRows, Error>, Never>
    private var answered = false

    init(command: Command, continuation: CheckedContinuation<Result<PostgresRows, Error>, Never>) {
        self.command = command
        self.continuation = continuation
    }

    deinit {
        guard !answered else { return }
        PostgresConnection.reclaimedQueries.add(1, ordering: .relaxed)
        continuation.resume(returning: .failure(PostgresError(.connectionLost, "the query was dropped unanswered")))
    }

    /// The statement it executes (nil for simple SQL).
    var statement: PreparedStatement? {
        if case .prepared(let statement, _) = command { return statement }
        return nil
    }

    /// What the pipeline needs to know of it.
    var machineCommand: PostgresConnection.Machine.Command {
        guard let statement else { return .simple }
        return .prepared(name: statement.name, readOnly: statement.isReadOnly, resource: statement.resource)
    }

    /// Resumes the caller, once.
    func answer(_ result: Result<PostgresRows, Error>) {
        guard !answered else { return }
        answered = true
        continuation.resume(returning: result)
    }
}
