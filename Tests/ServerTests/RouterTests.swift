import Logging
import Testing
@testable import Server

@Suite("Router and CORS (in process)")
struct RouterTests {
    private func makeRouter() -> Router {
        var router = Router(logger: Logger(label: "test"))
        router.use(CORSMiddleware(origins: ["http://localhost:5173"]))
        router.add(.get, "/items/:id") { request in
            HTTPResponse(status: 200, body: Array("item \(request.parameters["id"]!) via \(request.route!)".utf8))
        }
        router.add(.put, "/items/:id") { _ in HTTPResponse(status: 200) }
        router.add(.get, "/boom") { _ in throw TestFailure() }
        router.add(.get, "/teapot") { _ in throw HTTPError(418, "short and stout") }
        return router
    }

    struct TestFailure: Error {}

    @Test func parametersArePercentDecoded() async {
        let response = await makeRouter().respond(to: HTTPRequest(method: .get, path: "/items/a%20b"))
        #expect(response.status == 200)
        #expect(String(decoding: response.body, as: UTF8.self) == "item a b via /items/:id")
    }

    @Test func unknownPathIs404JSON() async {
        for path in ["/nope", "/items", "/items/", "/items/1/extra"] {
            let response = await makeRouter().respond(to: HTTPRequest(method: .get, path: path))
            #expect(response.status == 404, "\(path)")
            #expect(response.headers["Content-Type"] == "application/json")
            #expect(String(decoding: response.body, as: UTF8.self) == "{\"error\":\"Not found\"}\n")
        }
    }

    @Test func wrongMethodIs405WithAllow() async {
        let response = await makeRouter().respond(to: HTTPRequest(method: .delete, path: "/items/1"))
        #expect(response.status == 405)
        #expect(response.headers["Allow"] == "GET, HEAD, OPTIONS, PUT")
    }

    @Test func headUsesGetAndPlainOptionsAnswersAllow() async {
        let head = await makeRouter().respond(to: HTTPRequest(method: .head, path: "/items/7"))
        #expect(head.status == 200)
        let options = await makeRouter().respond(to: HTTPRequest(method: .options, path: "/items/7"))
        #expect(options.status == 204)
        #expect(options.headers["Allow"] == "GET, HEAD, OPTIONS, PUT")
    }

    @Test func thrownErrorsBecomeResponses() async {
        let boom = await makeRouter().respond(to: HTTPRequest(method: .get, path: "/boom"))
        #expect(boom.status == 500)
        #expect(String(decoding: boom.body, as: UTF8.self) == "{\"error\":\"Internal server error\"}\n")
        let teapot = await makeRouter().respond(to: HTTPRequest(method: .get, path: "/teapot"))
        #expect(teapot.status == 418)
    }

    @Test func corsForAllowedOriginsOnly() async {
        var allowed = HTTPRequest(method: .get, path: "/items/1")
        allowed.headers["Origin"] = "http://localhost:5173"
        let response = await makeRouter().respond(to: allowed)
        #expect(response.headers["Access-Control-Allow-Origin"] == "http://localhost:5173")
        #expect(response.headers["Vary"] == "Origin")

        var other = HTTPRequest(method: .get, path: "/items/1")
        other.headers["Origin"] = "http://evil.example"
        let refused = await makeRouter().respond(to: other)
        #expect(refused.headers["Access-Control-Allow-Origin"] == nil)

        var notFound = HTTPRequest(method: .get, path: "/missing")
        notFound.headers["Origin"] = "http://localhost:5173"
        #expect(await makeRouter().respond(to: notFound).headers["Access-Control-Allow-Origin"] == "http://localhost:5173")
    }

    /// The answer depends on the origin, so every answer says so, whatever the origin was.
    @Test func varyOriginOnEveryAnswer() async {
        for origin in ["http://localhost:5173", "http://evil.example", nil] {
            for path in ["/items/1", "/missing"] {
                var request = HTTPRequest(method: .get, path: path)
                request.headers["Origin"] = origin
                #expect(await makeRouter().respond(to: request).headers["Vary"] == "Origin", "\(path) from \(origin ?? "no origin")")
            }
        }
    }

    /// A preflight for a method the path does not serve gets the plain OPTIONS answer, with no
    /// CORS headers: the browser then refuses the request itself.
    @Test func preflightForAMethodThePathDoesNotServeGetsNoCORSHeaders() async {
        var preflight = HTTPRequest(method: .options, path: "/items/1")
        preflight.headers["Origin"] = "http://localhost:5173"
        preflight.headers["Access-Control-Request-Method"] = "DELETE"
        let response = await makeRouter().respond(to: preflight)
        #expect(response.status == 204)
        #expect(response.headers["Access-Control-Allow-Origin"] == nil)
        #expect(response.headers["Access-Control-Allow-Methods"] == nil)
        #expect(response.headers["Allow"] == "GET, HEAD, OPTIONS, PUT")
        preflight.headers["Access-Control-Request-Method"] = "HEAD"
        #expect(await makeRouter().respond(to: preflight).headers["Access-Control-Allow-Origin"] == "http://localhost:5173")
    }

    @Test func preflight() async {
        var preflight = HTTPRequest(method: .options, path: "/items/1")
        preflight.headers["Origin"] = "http://localhost:5173"
        preflight.headers["Access-Control-Request-Method"] = "PUT"
        preflight.headers["Access-Control-Request-Headers"] = "content-type, x-b"
        let response = await makeRouter().respond(to: preflight)
        #expect(response.status == 204)
        #expect(response.headers["Access-Control-Allow-Origin"] == "http://localhost:5173")
        #expect(response.headers["Access-Control-Allow-Methods"] == "GET, POST, PUT, DELETE, OPTIONS")
        #expect(response.headers["Access-Control-Allow-Headers"] == "content-type, x-b")

        preflight.headers["Access-Control-Request-Headers"] = nil
        #expect(await makeRouter().respond(to: preflight).headers["Access-Control-Allow-Headers"] == "Content-Type")

        preflight.headers["Origin"] = "http://evil.example"
        let refused = await makeRouter().respond(to: preflight)
        #expect(refused.headers["Access-Control-Allow-Origin"] == nil)
        #expect(refused.headers["Access-Control-Allow-Methods"] == nil)
    }

    /// Records the order its hooks run in, under its name.
    private final class Trace: @unchecked Sendable {  // tests call the router from one task at a time
        var events: [String] = []
    }

    private struct Recording: HTTPMiddleware {
        let name: String
        let trace: Trace
        var answersEarly = false

        func willHandle(_ request: HTTPRequest) -> HTTPResponse? {
            trace.events.append("\(name).will")
            return answersEarly ? HTTPResponse(status: 299) : nil
        }

        func didHandle(_ request: HTTPRequest, response: inout HTTPResponse) {
            trace.events.append("\(name).did(\(response.status))")
        }
    }

    @Test func immediateRoutesAnswerWithoutATaskAndAwaitedOnesOnce() async {
        let trace = Trace()
        var router = Router(logger: Logger(label: "test"))
        router.use(Recording(name: "outer", trace: trace))
        router.addImmediate(.get, "/now") { _ in HTTPResponse(status: 200) }
        router.add(.get, "/later/:id") { request in
            await Task.yield()
            return HTTPResponse(status: 201, body: Array(request.parameters["id"]!.utf8))
        }

        guard case .now(let now) = router.answer(HTTPRequest(method: .get, path: "/now")) else {
            Issue.record("an immediate route was not answered now")
            return
        }
        #expect(now.status == 200)
        guard case .now(let missing) = router.answer(HTTPRequest(method: .get, path: "/later")) else {
            Issue.record("a 404 was not answered now")
            return
        }
        #expect(missing.status == 404)
        #expect(trace.events == ["outer.will", "outer.did(200)", "outer.will", "outer.did(404)"])

        trace.events = []
        guard case .later(let handler) = router.answer(HTTPRequest(method: .get, path: "/later/7")) else {
            Issue.record("an awaited route was answered now")
            return
        }
        #expect(trace.events == ["outer.will"])
        let response = await handler()
        #expect(response.status == 201)
        #expect(response.body == Array("7".utf8))
        // `willHandle` ran once, before the task; the answer went through `didHandle` once.
        #expect(trace.events == ["outer.will", "outer.did(201)"])
    }

    @Test func middlewareRunsOutsideInAndBackAndErrorsMeetOneBoundary() async {
        let trace = Trace()
        var router = Router(logger: Logger(label: "test")) { error, _ in
            trace.events.append("boundary(\(error is HTTPError ? "http" : "other"))")
            return HTTPResponse(status: 599)
        }
        router.use(Recording(name: "a", trace: trace))
        router.use(Recording(name: "b", trace: trace))
        router.use(Recording(name: "c", trace: trace))
        router.add(.get, "/fail") { _ in throw TestFailure() }
        router.add(.get, "/teapot") { _ in throw HTTPError(418, "short and stout") }

        #expect(await router.respond(to: HTTPRequest(method: .get, path: "/fail")).status == 599)
        #expect(trace.events == ["a.will", "b.will", "c.will", "boundary(other)", "c.did(599)", "b.did(599)", "a.did(599)"])
        trace.events = []
        #expect(await router.respond(to: HTTPRequest(method: .get, path: "/teapot")).status == 599)
        #expect(trace.events == ["a.will", "b.will", "c.will", "boundary(http)", "c.did(599)", "b.did(599)", "a.did(599)"])
        // Without a boundary of its own, the router answers an HTTPError as it is, anything else 500.
        var plain = Router(logger: Logger(label: "test"))
        plain.add(.get, "/fail") { _ in throw TestFailure() }
        plain.add(.get, "/teapot") { _ in throw HTTPError(418, "short and stout") }
        #expect(await plain.respond(to: HTTPRequest(method: .get, path: "/fail")).status == 500)
        #expect(await plain.respond(to: HTTPRequest(method: .get, path: "/teapot")).status == 418)

        // An early answer skips the handler and the inner layers, not the outer ones' `didHandle`.
        trace.events = []
        var early = Router(logger: Logger(label: "test"))
        early.use(Recording(name: "a", trace: trace))
        early.use(Recording(name: "b", trace: trace, answersEarly: true))
        early.use(Recording(name: "c", trace: trace))
        early.add(.get, "/teapot") { _ in throw HTTPError(418, "short and stout") }
        #expect(await early.respond(to: HTTPRequest(method: .get, path: "/teapot")).status == 299)
        #expect(trace.events == ["a.will", "b.will", "b.did(299)", "a.did(299)"])
    }

    @Test func pathsMatchSegmentBySegment() async {
        var router = Router(logger: Logger(label: "test"))
        router.addImmediate(.get, "/") { _ in HTTPResponse(status: 200, body: Array("root".utf8)) }
        router.addImmediate(.get, "/a/:x/b/:y") { request in
            HTTPResponse(status: 200, body: Array("\(request.parameters["x"]!),\(request.parameters["y"]!)".utf8))
        }
        for (path, expected) in [
            ("/", "root"), ("/a/1/b/2", "1,2"), ("/a/%2F/b/%C3%A9", "/,é"),
            ("", nil), ("//", nil), ("/a/1/b/", nil), ("/a//b/2", nil), ("/a/1/c/2", nil), ("/a/1/b/2/", nil),
            ("/a/%zz/b/2", nil), ("/A/1/b/2", nil),
        ] as [(String, String?)] {
            let response = await router.respond(to: HTTPRequest(method: .get, path: path))
            if let expected {
                #expect(response.status == 200 && response.body == Array(expected.utf8), "\(path)")
            } else {
                #expect(response.status == 404, "\(path)")
            }
        }
    }
}

@Suite("Accept header (pure)")
struct AcceptHeaderTests {
    @Test func qualityComesFromTheMostSpecificRange() {
        let accept = AcceptHeader("application/problem+json;q=0.9, application/*;q=0.5, */*;q=0.1")
        #expect(accept.quality(of: "application/problem+json") == 0.9)
        #expect(accept.quality(of: "application/json") == 0.5)
        #expect(accept.quality(of: "text/html") == 0.1)
        #expect(AcceptHeader("text/html").quality(of: "application/json") == 0)
        #expect(AcceptHeader(nil).quality(of: "application/json") == 1)
    }

    @Test func preferringNeedsAStrictlyHigherQuality() {
        let problem = "application/problem+json", json = "application/json"
        #expect(AcceptHeader("application/problem+json").prefers(problem, over: json))
        #expect(AcceptHeader("application/problem+json, application/json;q=0.8").prefers(problem, over: json))
        #expect(AcceptHeader("Application/Problem+JSON ; charset=utf-8").prefers(problem, over: json))
        #expect(!AcceptHeader("application/json, application/problem+json").prefers(problem, over: json), "a tie keeps plain JSON")
        #expect(!AcceptHeader("*/*").prefers(problem, over: json))
        #expect(!AcceptHeader(nil).prefers(problem, over: json))
        #expect(!AcceptHeader("application/problem+json;q=0").prefers(problem, over: json))
        #expect(!AcceptHeader("application/problem+json;q=2, garbage").prefers(problem, over: json), "a malformed element is skipped")
        #expect(!AcceptHeader("application/json;q=0.9, application/problem+json;q=0.5").prefers(problem, over: json))
    }
}
