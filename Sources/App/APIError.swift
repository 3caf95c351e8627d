
/// An error the API answers with a 4xx: what was wrong with the request, in words for the client.
struct APIError: Error, Equatable {
    let status: Int
    let message: String

    static func badRequest(_ message: String) -> APIError { APIError(status: 400, message: message) }
    static let taskNotFound = APIError(status: 404, message: "Task not found")
    static let unsupportedMediaType = APIError(status: 415, message: "Content-Type must be application/json")
    static let preconditionFailed = APIError(status: 412, message: "The resource has changed: its ETag no longer matches")
    static let preconditionRequired = APIError(status: 428, message: "If-Match is required: send the ETag of the task you read")
}

/// The server has no room for the request now (every slot for streamed lists is taken): 503
/// with `Retry-After`.
struct Saturated: Error, Equatable {
    let message: String
}
