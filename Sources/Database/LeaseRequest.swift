import EventLoopCore

/// A caller waiting for a connection: answered exactly once, whichever comes first of its
/// answer (from the pool actor) and its continuation (the answer is kept until it arrives).
final class LeaseRequest: Sendable {
    private let state = LockedValue<(continuation: CheckedContinuation<PostgresConnection, Error>?, outcome: Result<PostgresConnection, Error>?, answered: Bool)>(
        (nil, nil, false)
    )

    /// Resumes the caller, or keeps `result` until it attaches; a second answer is ignored.
    func answer(_ result: Result<PostgresConnection, Error>) {
        let waiting = state.withLock { state -> CheckedContinuation<PostgresConnection, Error>? in
            guard !state.answered else { return nil }
            state.answered = true
            guard let continuation = state.continuation else {
                state.outcome = result
                return nil
            }
            state.continuation = nil
            return continuation
        }
        waiting?.resume(with: result)
    }

    /// The caller's continuation: resumed now if the answer came first.
    func attach(_ continuation: CheckedContinuation<PostgresConnection, Error>) {
        let outcome = state.withLock { state -> Result<PostgresConnection, Error>? in
            guard let outcome = state.outcome else {
                state.continuation = continuation
                return nil
            }
            state.outcome = nil
            return outcome
        }
        if let outcome { continuation.resume(with: outcome) }
    }
}
