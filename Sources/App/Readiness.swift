import Database
import EventLoopCore
import Synchronization

/// Whether this process should receive traffic: false from the moment shutdown begins, while
/// the pool cannot reach PostgreSQL, and while PostgreSQL does not answer a read of the tasks
/// table within `probeTimeout` (a lock, a hung backend: connects still work, queries do not).
/// Concurrent readiness checks share one probe in flight.
final class Readiness: Sendable {
    private let pool: ConnectionPool
    private let probeTimeout: Duration
    private let shuttingDown = Atomic<Bool>(false)
    /// The probe in flight, which every concurrent check awaits.
    private let probe = LockedValue<Task<Bool, Never>?>(nil)

    init(pool: ConnectionPool, probeTimeout: Duration) {
        self.pool = pool
        self.probeTimeout = probeTimeout
    }

    func beginShutdown() { shuttingDown.store(true, ordering: .relaxed) }

    func isReady() async -> Bool {
        guard !shuttingDown.load(ordering: .relaxed), await pool.statistics.reachable else { return false }
        let task = probe.withLock { current in
            if let current { return current }
            let started = Task { [pool, probeTimeout] in
                // The statement's own deadline bounds it: the pool answers `.queryTimeout` then.
                (try? await pool.query(Statements.readinessProbe, timeout: probeTimeout)) != nil
            }
            current = started
            return started
        }
        let ready = await task.value
        probe.withLock { current in
            if current == task { current = nil }
        }
        return ready
    }
}
