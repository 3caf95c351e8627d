import Logging

/// Routes requests by method and path template (`/api/tasks/:id`) through a middleware chain to
/// their handlers. Unknown paths get 404, known paths with another method 405 with `Allow`,
/// HEAD is served by the GET handler, and a plain OPTIONS gets 204 with `Allow`.
public struct Router: HTTPResponder {
    public typealias Handler = @Sendable (HTTPRequest) async throws -> HTTPResponse

    private struct Route: Sendable {
        let method: HTTPMethod
        let template: String
        let segments: [Segment]
        let handler: Handler
    }

    private enum Segment: Sendable {
        case literal(Substring)
        case parameter(String)
    }

    private var routes: [Route] = []
    private var middleware: [any HTTPMiddleware] = []
    private let logger: Logger

    public init(logger: Logger) {
        self.logger = logger
    }

    /// Adds a route; `:name` segments become `request.parameters[name]`.
    public mutating func add(_ method: HTTPMethod, _ template: String, handler: @escaping Handler) {
        let segments = template.split(separator: "/", omittingEmptySubsequences: false).map { part -> Segment in
            part.hasPrefix(":") ? .parameter(String(part.dropFirst())) : .literal(part)
        }
        routes.append(Route(method: method, template: template, segments: segments, handler: handler))
    }

    /// Adds middleware; the first added runs outermost. Middleware sees the matched route.
    public mutating func use(_ middleware: any HTTPMiddleware) {
        self.middleware.append(middleware)
    }

    public func respond(to request: HTTPRequest) async -> HTTPResponse {
        var request = request
        let pathSegments = request.path.split(separator: "/", omittingEmptySubsequences: false)
        let lookupMethod = request.method == .head ? HTTPMethod.get : request.method
        let final: Handler
        if let (route, parameters) = firstMatch(pathSegments, where: { $0.method == lookupMethod }) {
            request.route = route.template
            request.parameters = parameters
            final = route.handler
        } else if let (route, parameters) = firstMatch(pathSegments, where: { _ in true }) {
            // The path exists with other methods: 405 (or 204 to a plain OPTIONS) with `Allow`.
            request.route = route.template
            request.parameters = parameters
            let allow = Self.allowHeader(routes.filter { match($0.segments, pathSegments) != nil }.map(\.method))
            final = { request in
                if request.method == .options {
                    return HTTPResponse(status: 204, headers: HTTPHeaders([("Allow", allow)]))
                }
                throw HTTPError(405, "Method not allowed", headers: [("Allow", allow)])
            }
        } else {
            final = { _ in throw HTTPError(404, "Not found") }
        }
        do {
            return try await run(request, through: 0, to: final)
        } catch let error as HTTPError {
            return error.response
        } catch {
            logger.error("unhandled error", metadata: [
                "request_id": "\(request.requestID)", "route": "\(request.route ?? "-")", "error": "\(error)",
            ])
            return .error(500, "Internal server error")
        }
    }

    /// Runs middleware `index` and, through its `next`, the ones after it, then `final`.
    private func run(_ request: HTTPRequest, through index: Int, to final: Handler) async throws -> HTTPResponse {
        guard index < middleware.count else { return try await final(request) }
        return try await middleware[index].handle(request) { try await run($0, through: index + 1, to: final) }
    }

    /// The methods a path allows, as `Allow` lists them: sorted, with HEAD and OPTIONS.
    static func allowHeader(_ methods: [HTTPMethod]) -> String {
        var names = Set(methods.map(\.rawValue))
        if names.contains("GET") { names.insert("HEAD") }
        names.insert("OPTIONS")
        return names.sorted().joined(separator: ", ")
    }

    /// The first route accepted by `filter` whose template fits `path`, with its parameters.
    private func firstMatch(_ path: [Substring], where filter: (Route) -> Bool) -> (Route, [String: String])? {
        for route in routes where filter(route) {
            if let parameters = match(route.segments, path) { return (route, parameters) }
        }
        return nil
    }

    /// The decoded parameters when `path` fits the template (empty for a literal route, which
    /// allocates nothing), else nil.
    private func match(_ template: [Segment], _ path: [Substring]) -> [String: String]? {
        guard template.count == path.count else { return nil }
        var parameters: [String: String] = [:]
        for (segment, part) in zip(template, path) {
            switch segment {
            case .literal(let literal):
                guard literal == part else { return nil }
            case .parameter(let name):
                guard !part.isEmpty, let value = percentDecode(part) else { return nil }
                parameters[name] = value
            }
        }
        return parameters
    }
}
