import Database
import Foundation
import Logging
import Server
import ServiceLifecycle

/// Runs the HTTP server until graceful shutdown, then fails readiness, stops accepting and
/// drains requests in flight within the grace period.
struct HTTPService: Service {
    let server: HTTPServer
    let readiness: Readiness
    let gracePeriod: Duration

    func run() async throws {
        try server.start()
        try? await gracefulShutdown()
        armExitDeadline()
        readiness.beginShutdown()
        await server.shutdown(gracePeriod: gracePeriod)
    }

    /// Past the grace period plus `HTTPService.exitMargin`, the process exits (status 1) whatever
    /// is still pending, saying what was: a stuck pool or handler never keeps a pod from stopping.
    /// Dispatch's own thread keeps this deadline even if Swift's cooperative threads are stuck.
    private func armExitDeadline() {
        let server = server
        let deadline = gracePeriod + Self.exitMargin
        let (seconds, attoseconds) = deadline.components
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000))) {
            let message = "task-management: shutdown did not finish within \(deadline); exiting with \(server.requestsInFlight) requests in flight\n"
            FileHandle.standardError.write(Data(message.utf8))
            exit(1)
        }
    }

    /// Time after the grace period for the pool to drain and the loops to stop.
    static let exitMargin = Duration.seconds(5)
}

/// Keeps the connection pool for as long as the server runs, then drains and closes it.
struct PoolService: Service {
    let pool: ConnectionPool
    let gracePeriod: Duration

    func run() async throws {
        try? await gracefulShutdown()
        await pool.shutdown(gracePeriod: gracePeriod)
    }
}

/// Housekeeping every `interval`: deletes expired idempotency keys, in batches so that no
/// request waits on a large delete (replicas doing the same skip each other's rows), and folds
/// the revision counter's rows of backends that have gone. Stops at graceful shutdown.
struct Housekeeping: Service {
    let store: any TaskStore
    let interval: Duration
    let logger: Logger
    /// Rows per statement, and statements per round (the rest waits for the next round).
    static let batchSize = 1000
    static let maxBatchesPerRound = 100

    func run() async throws {
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try await Task.sleep(for: interval)
                await purgeExpiredKeys()
                await compactRevisionCounter()
            }
        }
    }

    /// One round of key deletion; how many keys it deleted.
    @discardableResult
    func purgeExpiredKeys() async -> Int {
        var total = 0
        do {
            for _ in 0..<Self.maxBatchesPerRound {
                let deleted = try await store.purgeExpiredIdempotencyKeys(limit: Self.batchSize)
                total += deleted
                if deleted < Self.batchSize { break }
            }
        } catch {
            logger.warning("could not purge expired idempotency keys", metadata: ["error": "\(error)"])
        }
        if total > 0 { logger.debug("purged expired idempotency keys", metadata: ["count": "\(total)"]) }
        return total
    }

    /// How many counter rows it folded (0 when it could not).
    @discardableResult
    func compactRevisionCounter() async -> Int {
        do {
            return try await store.compactRevisionCounter()
        } catch {
            logger.warning("could not compact the revision counter", metadata: ["error": "\(error)"])
            return 0
        }
    }
}
