import Database
import Logging
import Server
import Synchronization

/// An error the API answers with a 4xx: what was wrong with the request, in words for the client.
struct APIError: Error, Equatable {
    let status: Int
    let message: String

    static func badRequest(_ message: String) -> APIError { APIError(status: 400, message: message) }
    static let taskNotFound = APIError(status: 404, message: "Task not found")
    static let unsupportedMediaType = APIError(status: 415, message: "Content-Type must be application/json")
}

/// The one boundary where errors become HTTP answers: API errors as they are, PostgreSQL being
/// unreachable or saturated as 503 with `Retry-After`, bad data that slipped past validation as
/// 400, and anything else as 500 with the details only in the log.
struct ErrorBoundaryMiddleware: HTTPMiddleware {
    /// Seconds a client is told to wait before retrying a 503.
    let retryAfterSeconds: Int
    let logger: Logger
    /// During an outage every request fails alike: one warning per interval, with a count.
    let unavailableWarnings: LogThrottle

    init(retryAfterSeconds: Int, logger: Logger, unavailableLogInterval: Duration = .seconds(1)) {
        self.retryAfterSeconds = retryAfterSeconds
        self.logger = logger
        self.unavailableWarnings = LogThrottle(interval: unavailableLogInterval)
    }

    func response(for error: any Error, to request: HTTPRequest) -> HTTPResponse? {
        switch error {
        case let error as APIError:
            return .error(error.status, error.message)
        case is HTTPError:
            return nil
        case let error as PostgresError:
            if error.isTransient {
                if let suppressed = unavailableWarnings.admit() {
                    var metadata = metadata(request, error)
                    metadata["suppressed"] = "\(suppressed)"
                    logger.warning("database unavailable", metadata: metadata)
                }
                var response = HTTPResponse.error(503, "Database unavailable, try again shortly")
                response.headers["Retry-After"] = String(retryAfterSeconds)
                return response
            }
            if error.kind == .invalidValue || error.isDataError || error.isConstraintViolation {
                logger.info("rejected by the database", metadata: metadata(request, error))
                return .error(400, "Invalid value")
            }
            logger.error("database error", metadata: metadata(request, error))
            return .error(500, "Internal server error")
        case is CancellationError:
            return .error(503, "Request cancelled")
        default:
            logger.error("unexpected error", metadata: metadata(request, error))
            return .error(500, "Internal server error")
        }
    }

    private func metadata(_ request: HTTPRequest, _ error: any Error) -> Logger.Metadata {
        ["request_id": "\(request.requestID)", "route": "\(request.route ?? "-")", "error": "\(error)"]
    }
}

/// Lets one occurrence through per `interval` and counts the others, so that a failure hitting
/// every request (tens of thousands a second) writes a log line a second, not one per request.
final class LogThrottle: Sendable {
    private let interval: Duration
    private let state = Mutex<(last: ContinuousClock.Instant?, suppressed: Int)>((nil, 0))

    init(interval: Duration) {
        self.interval = interval
    }

    /// How many occurrences were held back since the last one let through, or nil when this one
    /// is held back.
    func admit(at now: ContinuousClock.Instant = .now) -> Int? {
        state.withLock { state in
            if let last = state.last, now - last < interval {
                state.suppressed += 1
                return nil
            }
            defer { state = (now, 0) }
            return state.suppressed
        }
    }
}
