import Database
import Logging
import Server

/// The one boundary where errors become HTTP answers: API errors as they are, PostgreSQL being
/// unreachable or saturated as 503 with `Retry-After`, bad data that slipped past validation as
/// 400, and anything else as 500 with the details only in the log; as problem details for the
/// clients that ask for them.
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

    /// What an error is answered with, before it is written in either shape.
    private struct Answer {
        let status: Int
        let message: String
        var headers: [(String, String)] = []
    }

    /// The error's answer: `{"error": message}` as always, or RFC 9457 problem details with the
    /// same `error` member when the request's `Accept` ranks `application/problem+json` above
    /// `application/json`.
    func response(for error: any Error, to request: HTTPRequest) -> HTTPResponse {
        let answer = answer(for: error, to: request)
        let problem = AcceptHeader(request.headers["Accept"]).prefers("application/problem+json", over: "application/json")
        var response: HTTPResponse = problem ? .problem(answer.status, answer.message) : .error(answer.status, answer.message)
        for (name, value) in answer.headers { response.headers[name] = value }
        return response
    }

    private func answer(for error: any Error, to request: HTTPRequest) -> Answer {
        switch error {
        case let error as APIError:
            return Answer(status: error.status, message: error.message)
        case let error as HTTPError:
            return Answer(status: error.status, message: error.message, headers: error.headers)
        case let error as Saturated:
            return Answer(status: 503, message: error.message, headers: [("Retry-After", String(retryAfterSeconds))])
        case let error as PostgresError:
            if error.isTransient {
                if let suppressed = unavailableWarnings.admit() {
                    var metadata = metadata(request, error)
                    metadata["suppressed"] = "\(suppressed)"
                    logger.warning("database unavailable", metadata: metadata)
                }
                return Answer(status: 503, message: "Database unavailable, try again shortly", headers: [("Retry-After", String(retryAfterSeconds))])
            }
            if error.kind == .invalidValue || error.isDataError || error.isConstraintViolation {
                logger.info("rejected by the database", metadata: metadata(request, error))
                return Answer(status: 400, message: "Invalid value")
            }
            logger.error("database error", metadata: metadata(request, error))
            return Answer(status: 500, message: "Internal server error")
        case is CancellationError:
            return Answer(status: 503, message: "Request cancelled", headers: [("Retry-After", String(retryAfterSeconds))])
        default:
            logger.error("unexpected error", metadata: metadata(request, error))
            return Answer(status: 500, message: "Internal server error")
        }
    }

    private func metadata(_ request: HTTPRequest, _ error: any Error) -> Logger.Metadata {
        ["request_id": "\(request.requestID)", "route": "\(request.route ?? "-")", "error": "\(error)"]
    }
}
