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
