import EventLoopCore

/// One read shared by every caller that asks while it is pending: a caller that arrives while a
/// read is in flight waits for the next one, which starts when the current one ends and answers
/// everyone who arrived meanwhile. Each caller thus gets a value read after it asked (never an
/// older one), while the reads themselves run one at a time. Used for the list's revision, which
/// every revalidation needs and which is cheaper to share than to read once per request.
final class CoalescedRead<Value: Sendable>: Sendable {
    private struct State {
        var running = false
        var waiting: [CheckedContinuation<Value, any Error>] = []
    }

    private let read: @Sendable () async throws -> Value
    private let state = LockedValue(State())

    init(_ read: @escaping @Sendable () async throws -> Value) {
        self.read = read
    }

    func value() async throws -> Value {
        try await withCheckedThrowingContinuation { continuation in
            let leads = state.withLock { state in
                state.waiting.append(continuation)
                guard !state.running else { return false }
                state.running = true
                return true
            }
            if leads { Task { await drain() } }
        }
    }

    /// Reads for each group of waiters in turn, until none is left.
    private func drain() async {
        while true {
            let group = state.withLock { state in
                let group = state.waiting
                state.waiting = []
                if group.isEmpty { state.running = false }
                return group
            }
            guard !group.isEmpty else { return }
            let result: Result<Value, any Error>
            do { result = .success(try await read()) } catch { result = .failure(error) }
            for continuation in group { continuation.resume(with: result) }
        }
    }
}
