/// How a responder answers a request: now (computed on the event loop, no task needed) or later
/// (the server runs the closure in a task and writes what it returns).
public enum HTTPAnswer: Sendable {
    /// A handler run on the caller's executor (the connection's event loop), like every
    /// nonisolated async function here: no executor hop to start it.
    public typealias Handler = nonisolated(nonsending) @Sendable () async -> HTTPResponse

    case now(HTTPResponse)
    case later(Handler)
}

/// Anything that turns a request into a response: the one link from Server to the application.
public protocol HTTPResponder: Sendable {
    /// Called on the event loop for every request: it must not block.
    func answer(_ request: HTTPRequest) -> HTTPAnswer
}

extension HTTPResponder {
    /// The response, awaiting it if it comes later (tests and tools; the server uses `answer`).
    public func respond(to request: HTTPRequest) async -> HTTPResponse {
        switch answer(request) {
        case .now(let response): response
        case .later(let handler): await handler()
        }
    }
}

/// A step around the handlers, in synchronous parts (so a request that needs no `await` needs
/// no task): a look before the handler and a look at the answer.
public protocol HTTPMiddleware: Sendable {
    /// Runs before the handler, outermost first; an answer returned here is the request's (the
    /// handler and inner middleware are skipped).
    func willHandle(_ request: HTTPRequest) -> HTTPResponse?
    /// Runs once the answer is known (errors already turned into answers), innermost first;
    /// may change it.
    func didHandle(_ request: HTTPRequest, response: inout HTTPResponse)
}

extension HTTPMiddleware {
    public func willHandle(_ request: HTTPRequest) -> HTTPResponse? { nil }
    public func didHandle(_ request: HTTPRequest, response: inout HTTPResponse) {}
}

/// Turns an error a handler threw into its answer: the application's one error boundary.
public typealias HTTPErrorResponder = @Sendable (_ error: any Error, _ request: HTTPRequest) -> HTTPResponse
