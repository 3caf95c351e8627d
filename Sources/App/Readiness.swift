import Database
import Synchronization

/// Whether this process should receive traffic: false from the moment shutdown begins, and
/// while the pool cannot reach PostgreSQL.
final class Readiness: Sendable {
    private let pool: ConnectionPool
    private let shuttingDown = Atomic<Bool>(false)

    init(pool: ConnectionPool) {
        self.pool = pool
    }

    func beginShutdown() { shuttingDown.store(true, ordering: .relaxed) }

    func isReady() async -> Bool {
        guard !shuttingDown.load(ordering: .relaxed) else { return false }
        return await pool.statistics.reachable
    }
}
