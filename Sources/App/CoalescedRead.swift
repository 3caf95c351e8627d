import Database
import EventLoopCore
import Metrics

/// One read per key shared by every caller that asks while it is pending: a caller that arrives
/// while a read of its key is in flight waits for the next one, which starts when the current
/// one ends and answers everyone who arrived meanwhile. Each caller thus gets a value read after
/// it asked (never an older one: a client sees its own acknowledged writes), while the reads of
/// one key run one at a time. A key is held only while it has a read or waiters.
final class CoalescedReads<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    private struct Slot {
        var waiting: [CheckedContinuation<Value, any Error>] = []
    }

    private let read: @Sendable (Key) async throws -> Value
    /// The keys being read; a key is present while its reader runs.
    private let state = LockedValue([Key: Slot]())
    private let metrics: SharedReadMetrics?

    init(metrics: SharedReadMetrics? = nil, _ read: @escaping @Sendable (Key) async throws -> Value) {
        self.metrics = metrics
        self.read = { key in
            metrics?.statements.increment()
            return try await read(key)
        }
    }

    func value(for key: Key) async throws -> Value {
        metrics?.requests.increment()
        return try await withCheckedThrowingContinuation { continuation in
            let leads = state.withLock { slots in
                guard slots[key] != nil else {
                    slots[key] = Slot()
                    return true
                }
                slots[key]!.waiting.append(continuation)
                return false
            }
            guard leads else { return }
            // The first caller's read starts now, in its own task; later callers wait for the next.
            Task {
                let result: Result<Value, any Error>
                do { result = .success(try await read(key)) } catch { result = .failure(error) }
                continuation.resume(with: result)
                await drain(key, after: result)
            }
        }
    }

    /// Reads for each group of waiters of `key` in turn, until none is left. A group that waited
    /// for a read that failed because the database is unavailable gets that failure at once
    /// rather than a read of its own: behind a stuck table, no caller waits for two timeouts.
    private func drain(_ key: Key, after first: Result<Value, any Error>) async {
        var previous: Result<Value?, any Error> = first.map { Optional($0) }
        while true {
            let group = state.withLock { slots -> [CheckedContinuation<Value, any Error>] in
                let group = slots[key]?.waiting ?? []
                if group.isEmpty {
                    slots[key] = nil
                } else {
                    slots[key]!.waiting = []
                }
                return group
            }
            guard !group.isEmpty else { return }
            if case .failure(let error) = previous, isUnavailable(error) {
                for continuation in group { continuation.resume(throwing: error) }
                previous = .success(nil)
                continue
            }
            let result: Result<Value, any Error>
            do { result = .success(try await read(key)) } catch { result = .failure(error) }
            for continuation in group { continuation.resume(with: result) }
            previous = result.map { Optional($0) }
        }
    }
}

/// How much shared reads save, on `/metrics`: requests that asked for `read` (a fixed name:
/// task, settings, list) and statements run for them; their ratio is the requests per statement.
struct SharedReadMetrics: Sendable {
    let requests: Metrics.Counter
    let statements: Metrics.Counter

    init(read: StaticString) {
        requests = Metrics.Counter(label: "db_shared_read_requests_total", dimensions: [("read", "\(read)")])
        statements = Metrics.Counter(label: "db_shared_read_statements_total", dimensions: [("read", "\(read)")])
    }
}

/// True when `error` says the database cannot answer now (retrying later may work).
private func isUnavailable(_ error: any Error) -> Bool {
    (error as? PostgresError)?.isTransient ?? false
}

/// `CoalescedReads` of a single value.
final class CoalescedRead<Value: Sendable>: Sendable {
    private let reads: CoalescedReads<Bool, Value>

    init(metrics: SharedReadMetrics? = nil, _ read: @escaping @Sendable () async throws -> Value) {
        reads = CoalescedReads(metrics: metrics) { _ in try await read() }
    }

    func value() async throws -> Value { try await reads.value(for: true) }
}

/// Lookups by id that arrive while `maxReads` reads are running are read together, in one
/// statement, by the next read to start: at low load each lookup reads at once; under load a
/// statement serves many (`maxBatch` at most). Every read starts after each of its lookups
/// arrived, so none gets an older row than the one it asked after.
final class BatchedLookup<Value: Sendable>: Sendable {
    private struct Lookup {
        let id: Int
        let continuation: CheckedContinuation<Value?, any Error>
    }
    private struct State {
        var running = 0
        var pending: [Lookup] = []
    }

    private let read: @Sendable ([Int]) async throws -> [Int: Value]
    private let maxReads: Int
    private let maxBatch: Int
    private let state = LockedValue(State())

    private let metrics: SharedReadMetrics?

    init(maxReads: Int, maxBatch: Int, metrics: SharedReadMetrics? = nil, read: @escaping @Sendable ([Int]) async throws -> [Int: Value]) {
        precondition(maxReads > 0 && maxBatch > 0)
        self.maxReads = maxReads
        self.maxBatch = maxBatch
        self.metrics = metrics
        self.read = { ids in
            metrics?.statements.increment()
            return try await read(ids)
        }
    }

    func value(for id: Int) async throws -> Value? {
        metrics?.requests.increment()
        return try await withCheckedThrowingContinuation { continuation in
            let starts = state.withLock { state in
                state.pending.append(Lookup(id: id, continuation: continuation))
                guard state.running < maxReads else { return false }
                state.running += 1
                return true
            }
            if starts { Task { await run() } }
        }
    }

    /// Reads batches of what is pending until nothing is.
    private func run() async {
        while true {
            let batch = state.withLock { state -> [Lookup] in
                let count = min(maxBatch, state.pending.count)
                guard count > 0 else {
                    state.running -= 1
                    return []
                }
                defer { state.pending.removeFirst(count) }
                return Array(state.pending.prefix(count))
            }
            guard !batch.isEmpty else { return }
            do {
                let values = try await read(Array(Set(batch.map(\.id))))
                for lookup in batch { lookup.continuation.resume(returning: values[lookup.id]) }
            } catch {
                // What waited meanwhile fails with it when the database is unavailable: behind a
                // stuck table, no lookup waits for two timeouts.
                var waited: [Lookup] = []
                if isUnavailable(error) {
                    waited = state.withLock { state in
                        defer { state.pending.removeAll() }
                        return state.pending
                    }
                }
                for lookup in batch + waited { lookup.continuation.resume(throwing: error) }
            }
        }
    }
}
