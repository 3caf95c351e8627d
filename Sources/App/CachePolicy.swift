import Server

/// `Cache-Control` on every GET and HEAD answer: `no-cache` on those with an `ETag` (a cache may
/// keep them but must revalidate each time, which a matching `If-None-Match` makes cheap), and
/// `no-store` on the rest, which carry no validator (a cache could only reuse one on its own
/// guesswork, RFC 9111 §4.2.2, and hand out a list or settings that have since changed).
struct CachePolicy: HTTPMiddleware {
    static let unvalidated = "no-store"
    static let validated = "no-cache"

    func didHandle(_ request: HTTPRequest, response: inout HTTPResponse) {
        guard request.method == .get || request.method == .head, response.headers["Cache-Control"] == nil else { return }
        response.headers["Cache-Control"] = response.headers["ETag"] == nil ? Self.unvalidated : Self.validated
    }
}
