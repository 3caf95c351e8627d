import Logging

/// Routes requests by method and path template (`/api/tasks/:id`) through the middleware to
/// their handlers. Unknown paths get 404, known paths with another method 405 with `Allow`,
/// HEAD is served by the GET handler, and a plain OPTIONS gets 204 with `Allow`.
///
/// Routing, middleware and immediate handlers are synchronous: a request whose answer needs no
/// `await` (`addImmediate` routes, 404, 405, a preflight) is answered `.now`, without a Swift
/// task. Only `add` handlers run in one.
public struct Router: HTTPResponder {
    public typealias Handler = @Sendable (HTTPRequest) async throws -> HTTPResponse
    /// A handler that answers without suspending; it runs on the event loop and must not block.
    public typealias ImmediateHandler = @Sendable (HTTPRequest) throws -> HTTPResponse

    /// What answers a matched route.
    private enum Action: Sendable {
        case immediate(ImmediateHandler)
        case deferred(Handler)
    }

    private struct Route: Sendable {
        let method: HTTPMethod
        let template: String
        let segments: [Segment]
        let action: Action
    }

    private enum Segment: Sendable {
        /// The segment's bytes, compared with the path's bytes as they are (no decoding).
        case literal([UInt8])
        case parameter(String)
    }

    private var routes: [Route] = []
    private var middleware: [any HTTPMiddleware] = []
    /// Where handler errors become answers (see `init`).
    private let errorResponder: HTTPErrorResponder

    /// A router whose handler errors are answered by `errorResponder`: the application's one
    /// error boundary. Without one, an `HTTPError` is answered as it is and anything else is
    /// logged and answered 500.
    public init(logger: Logger, errorResponder: HTTPErrorResponder? = nil) {
        self.errorResponder = errorResponder ?? { error, request in
            if let error = error as? HTTPError { return error.response }
            logger.error("unhandled error", metadata: [
                "request_id": "\(request.requestID)", "route": "\(request.route ?? "-")", "error": "\(error)",
            ])
            return .error(500, "Internal server error")
        }
    }

    /// Adds a route answered in a task; `:name` segments become `request.parameters[name]`.
    public mutating func add(_ method: HTTPMethod, _ template: String, handler: @escaping Handler) {
        add(method, template, .deferred(handler))
    }

    /// Adds a route whose handler answers at once, on the event loop, with no task.
    public mutating func addImmediate(_ method: HTTPMethod, _ template: String, handler: @escaping ImmediateHandler) {
        add(method, template, .immediate(handler))
    }

    private mutating func add(_ method: HTTPMethod, _ template: String, _ action: Action) {
        let segments = template.split(separator: "/", omittingEmptySubsequences: false).map { part -> Segment in
            part.hasPrefix(":") ? .parameter(String(part.dropFirst())) : .literal(Array(part.utf8))
        }
        routes.append(Route(method: method, template: template, segments: segments, action: action))
    }

    /// Every route's method and path template (`/api/tasks/:id`), in the order added; HEAD and
    /// OPTIONS are served wherever GET or any route is. For checking a description against it.
    public var routeTable: [(method: HTTPMethod, template: String)] {
        routes.map { ($0.method, $0.template) }
    }

    /// Adds middleware; the first added runs outermost. Middleware sees the matched route.
    public mutating func use(_ middleware: any HTTPMiddleware) {
        self.middleware.append(middleware)
    }

    /// Routes `request` and runs the middleware's `willHandle`; answers now unless the route's
    /// handler must be awaited.
    public func answer(_ request: HTTPRequest) -> HTTPAnswer {
        var request = request
        let lookupMethod = request.method == .head ? HTTPMethod.get : request.method
        var routeIndex: Int?
        var answer: Result<HTTPResponse, any Error>?
        if let (index, parameters) = firstMatch(request.path, where: { $0.method == lookupMethod }) {
            request.route = routes[index].template
            request.parameters = parameters
            routeIndex = index
        } else if let (index, parameters) = firstMatch(request.path, where: { _ in true }) {
            // The path exists with other methods: 405 (or 204 to a plain OPTIONS) with `Allow`.
            request.route = routes[index].template
            request.parameters = parameters
            let methods = routes.filter { match($0.segments, request.path) != nil }.map(\.method)
            request.routeMethods = methods
            let allow = Self.allowHeader(methods)
            answer = request.method == .options
                ? .success(HTTPResponse(status: 204, headers: HTTPHeaders([("Allow", allow)])))
                : .failure(HTTPError(405, "Method not allowed", headers: [("Allow", allow)]))
        }
        if let early = runWillHandle(request) { return .now(early) }
        if let routeIndex {
            switch routes[routeIndex].action {
            case .immediate(let handler):
                answer = Result { try handler(request) }
            case .deferred(let handler):
                return .later { [self, request] in
                    let answer: Result<HTTPResponse, any Error>
                    do {
                        answer = .success(try await handler(request))
                    } catch {
                        answer = .failure(error)
                    }
                    return completed(request, answer)
                }
            }
        }
        return .now(completed(request, answer ?? .failure(HTTPError(404, "Not found"))))
    }

    /// The first `willHandle` answer, having run `didHandle` of the middleware up to the one that
    /// gave it (so an early answer is logged and decorated like any other).
    private func runWillHandle(_ request: HTTPRequest) -> HTTPResponse? {
        for index in middleware.indices {
            if var early = middleware[index].willHandle(request) {
                for outer in middleware[...index].reversed() { outer.didHandle(request, response: &early) }
                return early
            }
        }
        return nil
    }

    /// The handler's answer after the middleware: an error becomes what the error responder
    /// answers for it; then every `didHandle`, innermost first.
    private func completed(_ request: HTTPRequest, _ answer: Result<HTTPResponse, any Error>) -> HTTPResponse {
        var response: HTTPResponse
        switch answer {
        case .success(let handled):
            response = handled
        case .failure(let error):
            response = errorResponder(error, request)
        }
        for layer in middleware.reversed() { layer.didHandle(request, response: &response) }
        return response
    }

    /// The methods a path allows, as `Allow` lists them: sorted, with HEAD and OPTIONS.
    static func allowHeader(_ methods: [HTTPMethod]) -> String {
        var names = Set(methods.map(\.rawValue))
        if names.contains("GET") { names.insert("HEAD") }
        names.insert("OPTIONS")
        return names.sorted().joined(separator: ", ")
    }

    /// The index of the first route accepted by `filter` whose template fits `path`, with its
    /// parameters.
    private func firstMatch(_ path: String, where filter: (Route) -> Bool) -> (Int, PathParameters)? {
        for index in routes.indices where filter(routes[index]) {
            if let parameters = match(routes[index].segments, path) { return (index, parameters) }
        }
        return nil
    }

    /// The decoded parameters when `path` fits the template (empty for a literal route, which
    /// allocates nothing), else nil.
    private func match(_ template: [Segment], _ path: String) -> PathParameters? {
        if let parameters = path.utf8.withContiguousStorageIfAvailable({ match(template, $0) }) { return parameters }
        return Array(path.utf8).withUnsafeBufferPointer { match(template, $0) }
    }

    /// `match` on the path's UTF-8 bytes: walks its `/`-separated parts in place.
    private func match(_ template: [Segment], _ path: UnsafeBufferPointer<UInt8>) -> PathParameters? {
        var parameters = PathParameters()
        var start = 0
        var position = 0
        while true {
            var end = start
            while end < path.count, path[end] != UInt8(ascii: "/") { end += 1 }
            guard position < template.count else { return nil }
            let part = UnsafeBufferPointer(rebasing: path[start..<end])
            switch template[position] {
            case .literal(let literal):
                guard literal.count == part.count, literal.elementsEqual(part) else { return nil }
            case .parameter(let name):
                guard !part.isEmpty, let value = percentDecode(String(decoding: part, as: UTF8.self)[...]) else { return nil }
                parameters[name] = value
            }
            position += 1
            guard end < path.count else { break }
            start = end + 1
        }
        return position == template.count ? parameters : nil
    }
}
