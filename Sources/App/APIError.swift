
/// An error the API answers with a 4xx: what was wrong with the request, in words for the client.
struct APIError: Error, Equatable {
    let status: Int
    let message: String

    static func badRequest(_ message: String) -> APIError { APIError(status: 400, message: message) }
    static let taskNotFound = APIError(status: 404, message: "Task not found")
    static let unsupportedMediaType = APIError(status: 415, message: "Content-Type must be application/json")
}
