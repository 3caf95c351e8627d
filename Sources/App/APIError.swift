import Database
import Logging
import Server

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

    func response(for error: any Error, to request: HTTPRequest) -> HTTPResponse? {
        switch error {
        case let error as APIError:
            return .error(error.status, error.message)
        case is HTTPError:
            return nil
        case let error as PostgresError:
            if error.isTransient {
                logger.warning("database unavailable", metadata: metadata(request, error))
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
