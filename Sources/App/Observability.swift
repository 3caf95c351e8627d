import EventLoopCore
import Logging
import Metrics
import Server

/// One log line per request (method, route template, status, duration, request id) and the
/// request metrics: a counter by route, method and status, and a duration histogram.
struct ObservabilityMiddleware: HTTPMiddleware {
    let logger: Logger
    let metrics: RequestMetrics

    func didHandle(_ request: HTTPRequest, response: inout HTTPResponse) {
        let elapsed = ContinuousClock.now - request.receivedAt
        let route = request.route ?? "unmatched"
        let status = response.status
        let method = Self.methodLabel(request.method)
        metrics.record(route: route, method: method, status: status, duration: elapsed)
        logger.info("request", metadata: [
            "method": "\(method)", "route": "\(route)", "status": "\(status)",
            "duration_ms": "\(Double(elapsed.components.attoseconds / 1_000_000_000_000) / 1000 + Double(elapsed.components.seconds) * 1000)",
            "request_id": "\(request.requestID)",
        ])
    }
}

extension ObservabilityMiddleware {
    /// The methods the router serves; any other is counted and logged as `other`, so what a
    /// client sends can never add a metric series (route labels are templates or `unmatched`,
    /// statuses come from the code).
    static let knownMethods: Set<String> = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"]

    static func methodLabel(_ method: HTTPMethod) -> String {
        knownMethods.contains(method.rawValue) ? method.rawValue : "other"
    }
}

/// Request counters and timers, created once per label set (swift-metrics lookups are not free).
final class RequestMetrics: Sendable {
    private struct Key: Hashable {
        let route: String
        let method: String
        let status: Int

        /// Hashes lengths and the status only: the few label sets differ there often enough, and
        /// hashing whole strings on every request costs more than the rare equal-hash compare.
        func hash(into hasher: inout Hasher) {
            hasher.combine(route.utf8.count)
            hasher.combine(method.utf8.count)
            hasher.combine(status)
        }
    }

    /// Per route, method and status: the request counter and the duration timer (the timer is
    /// shared by every status of a route and method, as its labels have no status).
    private let instruments = LockedValue<[Key: (counter: Metrics.Counter, timer: Metrics.Timer)]>([:])

    func record(route: String, method: String, status: Int, duration: Duration) {
        let key = Key(route: route, method: method, status: status)
        let (counter, timer) = instruments.withLock { instruments in
            if let found = instruments[key] { return found }
            let counter = Metrics.Counter(label: "http_requests_total", dimensions: [("route", route), ("method", method), ("status", String(status))])
            let timer = Metrics.Timer(label: "http_request_duration_seconds", dimensions: [("route", route), ("method", method)], preferredDisplayUnit: .seconds)
            instruments[key] = (counter, timer)
            return (counter, timer)
        }
        counter.increment()
        timer.record(duration: duration)
    }
}
