/// Cross-origin headers for the allowed origins: `Access-Control-Allow-Origin: <origin>` on their
/// requests, and 204 answers to their preflight `OPTIONS` requests for a method the route
/// serves. Other origins get no CORS headers. Every answer carries `Vary: Origin`, since it
/// depends on the origin (a shared cache must not hand one origin's answer to another).
public struct CORSMiddleware: HTTPMiddleware {
    private let allowedOrigins: Set<String>
    private let allowedMethods: String
    private let maxAge: Int
    private let exposedHeaders: String?

    /// `origins` are compared case-insensitively; `maxAge` is how long browsers may cache a
    /// preflight; `exposedHeaders` are response headers scripts of those origins may read
    /// (`Access-Control-Expose-Headers` on actual answers).
    public init(
        origins: [String], methods: [HTTPMethod] = [.get, .post, .put, .delete, .options], maxAge: Int = 600, exposedHeaders: [String] = []
    ) {
        allowedOrigins = Set(origins.map { $0.lowercased() })
        allowedMethods = methods.map(\.rawValue).joined(separator: ", ")
        self.maxAge = maxAge
        self.exposedHeaders = exposedHeaders.isEmpty ? nil : exposedHeaders.joined(separator: ", ")
    }

    public func willHandle(_ request: HTTPRequest) -> HTTPResponse? {
        guard request.method == .options, request.route != nil, isServedPreflight(request) == true,
              let origin = allowedOrigin(of: request) else {
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
        if response.headers["Vary"] == nil { response.headers["Vary"] = "Origin" }
        guard let origin = allowedOrigin(of: request) else { return }
        // A preflight for a method the route does not serve gets no CORS headers (the router's
        // plain OPTIONS answer), so the browser refuses the actual request.
        if request.method == .options, isServedPreflight(request) == false { return }
        response.headers["Access-Control-Allow-Origin"] = origin
        if let exposedHeaders, request.method != .options { response.headers["Access-Control-Expose-Headers"] = exposedHeaders }
    }

    /// For a preflight, whether the route serves the method it asks about; nil for any other request.
    private func isServedPreflight(_ request: HTTPRequest) -> Bool? {
        guard request.method == .options, let requested = request.headers["Access-Control-Request-Method"] else { return nil }
        let method = HTTPMethod(requested)
        return request.routeMethods.contains(method) || (method == .head && request.routeMethods.contains(.get))
    }

    /// The request's `Origin` when it is one of the allowed.
    private func allowedOrigin(of request: HTTPRequest) -> String? {
        guard let origin = request.headers["Origin"], allowedOrigins.contains(origin.lowercased()) else { return nil }
        return origin
    }
}
