import EventLoopCore

/// Items handed from callbacks on any thread to one consuming task, which takes everything
/// queued at once (so work that arrives while it is busy is done together). Bounded: a push
/// beyond `capacity` is refused and the pusher decides what that means.
final class BatchQueue<Item: Sendable>: Sendable {
    private struct State {
        var items: [Item] = []
        var waiter: CheckedContinuation<[Item]?, Never>?
        var finished = false
    }
    private let state = LockedValue(State())
    let capacity: Int

    init(capacity: Int) {
        self.capacity = capacity
    }

    /// Queues `item`; false when `capacity` items are queued already or the queue is finished.
    func push(_ item: Item) -> Bool {
        var accepted = false
        let waiter = state.withLock { state -> CheckedContinuation<[Item]?, Never>? in
            guard !state.finished, state.items.count < capacity else { return nil }
            accepted = true
            guard let waiter = state.waiter else {
                state.items.append(item)
                return nil
            }
            state.waiter = nil
            return waiter
        }
        waiter?.resume(returning: [item])
        return accepted
    }

    /// No more items: the consumer gets what is queued, then nil.
    func finish() {
        let waiter = state.withLock { state -> CheckedContinuation<[Item]?, Never>? in
            state.finished = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: nil)
    }

    /// Everything queued (at least one item), waiting for one when none is; nil once finished
    /// and drained, or when the waiting task is cancelled.
    func next() async -> [Item]? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let ready = state.withLock { state -> [Item]?? in
                    if !state.items.isEmpty {
                        defer { state.items.removeAll(keepingCapacity: true) }
                        return .some(state.items)
                    }
                    if state.finished { return .some(nil) }
                    state.waiter = continuation
                    return nil
                }
                if let ready { continuation.resume(returning: ready) }
            }
        } onCancel: {
            finish()
        }
    }
}
