import Server

/// `Cache-Control: no-store` on every GET and HEAD answer. The answers carry no validator, so a
/// cache could only reuse one on its own guesswork (RFC 9111 §4.2.2 lets it, for 200 and 404
/// alike) and hand out a task list or settings that have since changed.
struct CachePolicy: HTTPMiddleware {
    static let value = "no-store"

    func didHandle(_ request: HTTPRequest, response: inout HTTPResponse) {
        guard request.method == .get || request.method == .head, response.headers["Cache-Control"] == nil else { return }
        response.headers["Cache-Control"] = Self.value
    }
}
