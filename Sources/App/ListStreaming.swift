import EventLoopCore

/// How the task list is answered when it is long: up to `bufferedRows` tasks are read and
/// written whole; a longer list is read again from a cursor `fetchRows` at a time and streamed,
/// at most `slots.capacity` at once per process (each holds a database connection while its
/// client reads); a list that finds no slot free within `slotWait` gets 503.
struct ListStreaming: Sendable {
    var bufferedRows = 1000
    var fetchRows = 500
    var slots = Slots(capacity: 4)
    var slotWait: Duration = .seconds(2)

    /// A bounded count of things in progress, with a queue (first come, first served) of those
    /// waiting for one to end.
    final class Slots: Sendable {
        let capacity: Int
        private struct State {
            var taken = 0
            var waiters: [(id: Int, continuation: CheckedContinuation<Bool, Never>)] = []
            var nextID = 0
        }
        private let state = LockedValue(State())

        init(capacity: Int) {
            self.capacity = capacity
        }

        /// True once a slot is taken (at once, or when one is given back within `timeout`),
        /// false when none came in time. A true must be matched by one `give()`.
        func take(within timeout: Duration) async -> Bool {
            let immediate: Int? = state.withLock { state in
                if state.taken < capacity {
                    state.taken += 1
                    return nil
                }
                state.nextID += 1
                return state.nextID
            }
            guard let id = immediate else { return true }
            guard timeout > .zero else { return false }
            return await withCheckedContinuation { continuation in
                let handedOver = state.withLock { state in
                    if state.taken < capacity {  // one was given back in the meantime
                        state.taken += 1
                        return true
                    }
                    state.waiters.append((id, continuation))
                    return false
                }
                if handedOver {
                    continuation.resume(returning: true)
                    return
                }
                Task {
                    try? await Task.sleep(for: timeout)
                    self.expire(id)
                }
            }
        }

        /// Gives a slot back: to the first waiter, if any.
        func give() {
            let next = state.withLock { state in
                guard !state.waiters.isEmpty else {
                    state.taken -= 1
                    return nil as CheckedContinuation<Bool, Never>?
                }
                return state.waiters.removeFirst().continuation
            }
            next?.resume(returning: true)
        }

        private func expire(_ id: Int) {
            let expired = state.withLock { state in
                state.waiters.firstIndex { $0.id == id }.map { state.waiters.remove(at: $0).continuation }
            }
            expired?.resume(returning: false)
        }

        var inUse: Int { state.withLock { $0.taken } }
    }

    /// A slot taken: given back when the last reference goes.
    final class Lease: Sendable {
        private let slots: Slots
        init(_ slots: Slots) { self.slots = slots }
        deinit { slots.give() }
    }
}
