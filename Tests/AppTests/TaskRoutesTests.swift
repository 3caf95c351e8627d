import Foundation
import Logging
import Testing
@testable import App
@testable import Server

/// The task routes through the router and the error boundary, on an in-memory store: the
/// contract's shapes and errors in milliseconds. (`TaskAPITests` checks all of it again on
/// PostgreSQL, over sockets.)
@Suite("Task routes on an in-memory store (no database)")
struct TaskRoutesTests {
    private func makeRouter() -> Router {
        let logger = Logger(label: "test")
        let boundary = ErrorBoundary(retryAfterSeconds: 1, logger: logger)
        var router = Router(logger: logger, errorResponder: boundary.response)
        TaskRoutes(store: InMemoryTaskStore()).register(on: &router)
        return router
    }

    private func send(
        _ router: Router, _ method: HTTPMethod, _ target: String, json: String? = nil, accept: String? = nil
    ) async -> (status: Int, body: String) {
        let parts = target.split(separator: "?", maxSplits: 1)
        var headers = json == nil ? HTTPHeaders() : HTTPHeaders([("Content-Type", "application/json")])
        if let accept { headers["Accept"] = accept }
        let request = HTTPRequest(
            method: method, path: String(parts[0]), query: QueryParameters(parts.count > 1 ? parts[1] : ""),
            headers: headers, body: Array((json ?? "").utf8)
        )
        let response = await router.respond(to: request)
        return (response.status, String(decoding: response.body, as: UTF8.self))
    }

    @Test func createReadUpdateDeleteWithFlaskShapedJSON() async {
        let router = makeRouter()
        let created = await send(router, .post, "/api/tasks", json: #"{"title":"Write \"tests\"","description":null}"#)
        #expect(created.status == 201)
        #expect(created.body == #"{"created_at":"2024-01-01T12:00:00.001000+00:00","description":null,"id":1,"status":"TODO","title":"Write \"tests\"","updated_at":"2024-01-01T12:00:00.001000+00:00"}"# + "\n")
        #expect(await send(router, .get, "/api/tasks/1").body == created.body)
        let updated = await send(router, .put, "/api/tasks/1", json: #"{"status":"DONE","description":"é"}"#)
        #expect(updated.status == 200)
        #expect(updated.body.contains(#""description":"\u00e9""#) && updated.body.contains(#""status":"DONE""#))
        #expect(await send(router, .delete, "/api/tasks/1").status == 204)
        let gone = await send(router, .get, "/api/tasks/1")
        #expect(gone.status == 404 && gone.body == #"{"error":"Task not found"}"# + "\n")
    }

    @Test func listSortsAndDefaultsToIdOrder() async throws {
        let router = makeRouter()
        for title in ["b", "c", "a"] { _ = await send(router, .post, "/api/tasks", json: #"{"title":"\#(title)"}"#) }
        func titles(_ target: String) async throws -> [String] {
            let body = await send(router, .get, target).body
            let tasks = try JSONSerialization.jsonObject(with: Data(body.utf8)) as! [[String: Any]]
            return tasks.map { $0["title"] as! String }
        }
        #expect(try await titles("/api/tasks") == ["b", "c", "a"])
        #expect(try await titles("/api/tasks?sort_by=title") == ["a", "b", "c"])
        #expect(try await titles("/api/tasks?sort_by=title&sort_order=desc") == ["c", "b", "a"])
        #expect(try await titles("/api/tasks?sort_by=created_at&sort_order=desc") == ["a", "c", "b"])
        #expect(await send(router, .get, "/api/tasks?sort_by=nonsense").status == 200)
    }

    @Test func badInputIsAClearErrorAndChangesNothing() async {
        let router = makeRouter()
        #expect(await send(router, .post, "/api/tasks", json: "{").status == 400)
        #expect(await send(router, .post, "/api/tasks", json: "[]").status == 400)
        #expect(await send(router, .post, "/api/tasks", json: #"{"description":"no title"}"#).status == 400)
        #expect(await send(router, .post, "/api/tasks", json: #"{"title":"x","status":"LATER"}"#).status == 400)
        #expect(await send(router, .put, "/api/tasks/1", json: #"{"title":"x"}"#).status == 404)
        #expect(await send(router, .get, "/api/tasks/abc").status == 404)
        #expect(await send(router, .get, "/api/tasks").body == "[]\n")
        var wrongType = HTTPRequest(method: .post, path: "/api/tasks", body: Array(#"{"title":"x"}"#.utf8))
        wrongType.headers["Content-Type"] = "text/plain"
        #expect(await router.respond(to: wrongType).status == 415)
    }

    @Test func settingsStartDarkModeOffAndChange() async {
        let router = makeRouter()
        #expect(await send(router, .get, "/api/settings").body.hasPrefix(#"{"dark_mode":false,"updated_at":"#))
        #expect(await send(router, .put, "/api/settings", json: #"{"dark_mode":true}"#).body.hasPrefix(#"{"dark_mode":true,"#))
        #expect(await send(router, .put, "/api/settings", json: #"{"dark_mode":"yes"}"#).status == 400)
        #expect(await send(router, .get, "/api/settings").body.hasPrefix(#"{"dark_mode":true,"#))
    }

    @Test func timestampsAreWrittenAsPythonsIsoformat() {
        func iso(_ micros: Int64) -> String { Timestamp(microsecondsSinceEpoch: micros).isoFormatted() }
        #expect(iso(0) == "1970-01-01T00:00:00+00:00")
        #expect(iso(1_704_110_400_123_456) == "2024-01-01T12:00:00.123456+00:00")
        #expect(iso(1_704_110_400_100_000) == "2024-01-01T12:00:00.100000+00:00")
        #expect(iso(-1) == "1969-12-31T23:59:59.999999+00:00")
        #expect(iso(-62_135_596_800_000_000) == "0001-01-01T00:00:00+00:00")
        #expect(iso(253_402_300_799_999_999) == "9999-12-31T23:59:59.999999+00:00")
    }

    @Test func errorsAreProblemDetailsOnlyForClientsThatPreferThem() async {
        let router = makeRouter()
        let plain = #"{"error":"Task not found"}"# + "\n"
        #expect(await send(router, .get, "/api/tasks/7").body == plain)
        #expect(await send(router, .get, "/api/tasks/7", accept: "application/json, text/plain, */*").body == plain, "axios's default")
        #expect(await send(router, .get, "/api/tasks/7", accept: "*/*").body == plain)
        let problem = await send(router, .get, "/api/tasks/7", accept: "application/problem+json")
        #expect(problem.status == 404)
        #expect(problem.body == #"{"detail":"Task not found","error":"Task not found","status":404,"title":"Not Found","type":"about:blank"}"# + "\n")
        let invalid = await send(router, .post, "/api/tasks", json: #"{"title":""}"#, accept: "application/problem+json, application/json;q=0.9")
        #expect(invalid.status == 400 && invalid.body.contains(#""detail":"title must not be empty""#))
        let method = await send(router, HTTPMethod("PATCH"), "/api/tasks", accept: "application/problem+json")
        #expect(method.status == 405 && method.body.contains(#""title":"Method Not Allowed""#))
    }
}
