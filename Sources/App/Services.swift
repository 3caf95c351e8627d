import Database
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
        readiness.beginShutdown()
        await server.shutdown(gracePeriod: gracePeriod)
    }
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
