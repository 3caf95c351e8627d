/// Cross-origin headers for the allowed origins: `Access-Control-Allow-Origin: <origin>` with
/// `Vary: Origin` on their requests, and 204 answers to their preflight `OPTIONS` requests.
/// Other origins get no CORS headers at all.
public struct CORSMiddleware: HTTPMiddleware {
    private let allowedOrigins: Set<String>
    private let allowedMethods: String
    private let maxAge: Int

    /// `origins` are compared case-insensitively; `maxAge` is how long browsers may cache a preflight.
    public init(origins: [String], methods: [HTTPMethod] = [.get, .post, .put, .delete, .options], maxAge: Int = 600) {
        allowedOrigins = Set(origins.map { $0.lowercased() })
        allowedMethods = methods.map(\.rawValue).joined(separator: ", ")
        self.maxAge = maxAge
    }

    public func willHandle(_ request: HTTPRequest) -> HTTPResponse? {
        guard request.method == .options, request.route != nil,
              request.headers.contains("Access-Control-Request-Method"), let origin = allowedOrigin(of: request) else {
            return nil
        }
        var headers = HTTPHeaders()
        headers["Access-Control-Allow-Origin"] = origin
        headers["Vary"] = "Origin"
        headers["Access-Control-Allow-Methods"] = allowedMethods
        let requested = request.headers["Access-Control-Request-Headers"]?.trimmingASCIISpaces() ?? ""
        headers["Access-Control-Allow-Headers"] = requested.isEmpty ? "Content-Type" : requested
        headers["Access-Control-Max-Age"] = String(maxAge)
        return HTTPResponse(status: 204, headers: headers)
    }

    public func didHandle(_ request: HTTPRequest, response: inout HTTPResponse) {
        guard let origin = allowedOrigin(of: request) else { return }
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
    }

    /// The request's `Origin` when it is one of the allowed.
    private func allowedOrigin(of request: HTTPRequest) -> String? {
        guard let origin = request.headers["Origin"], allowedOrigins.contains(origin.lowercased()) else { return nil }
        return origin
    }
}
