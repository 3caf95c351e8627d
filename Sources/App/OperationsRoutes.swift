import Database
import Prometheus
import Server

/// `/healthz`, `/readyz` and `/metrics`.
struct OperationsRoutes: Sendable {
    let readiness: Readiness
    let registry: PrometheusCollectorRegistry
    /// The pool, whose gauges are brought up to date just before each scrape.
    let pool: ConnectionPool
    /// Seconds a client is told to wait before asking again after `/readyz` said 503.
    let retryAfterSeconds: Int

    private static let healthy = Array("{\"status\":\"ok\"}\n".utf8)

    func register(on router: inout Router) {
        router.addImmediate(.get, "/healthz") { _ in .json(200, Self.healthy) }
        router.add(.get, "/readyz") { _ in
            if await readiness.isReady() {
                return .json(200, Array("{\"status\":\"ready\"}\n".utf8))
            }
            var response = HTTPResponse.error(503, "not ready")
            response.headers["Retry-After"] = String(retryAfterSeconds)
            return response
        }
        router.add(.get, "/metrics") { _ in
            await pool.publishMetrics()
            var text: [UInt8] = []
            registry.emit(into: &text)
            return HTTPResponse(status: 200, headers: HTTPHeaders([("Content-Type", "text/plain; version=0.0.4; charset=utf-8")]), body: text)
        }
    }
}
