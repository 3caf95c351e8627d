import Database
import Logging
import Server

/// The one boundary where errors become HTTP answers: API errors as they are, PostgreSQL being
/// unreachable or saturated as 503 with `Retry-After`, bad data that slipped past validation as
/// 400, and anything else as 500 with the details only in the log.
struct ErrorBoundary: Sendable {
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

    func response(for error: any Error, to request: HTTPRequest) -> HTTPResponse {
        switch error {
        case let error as APIError:
            return .error(error.status, error.message)
        case let error as HTTPError:
            return error.response
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
