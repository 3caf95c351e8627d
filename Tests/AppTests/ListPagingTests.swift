import Foundation
import Testing
import TestSupport
@testable import App

/// Opt-in pages (`limit`, `offset`, `Link: rel="next"`) and the `status` filter, on PostgreSQL.
@Suite("List pages and filters", .enabled(if: TestPostgres.isConfigured, TestPostgres.skipReason))
struct ListPagingTests {
    /// The ids of a list answer.
    private static func ids(_ response: TestResponse) throws -> [Int] {
        try response.jsonArray().map { $0["id"] as! Int }
    }

    /// The target of a `Link: <…>; rel="next"` header, if there is one.
    private static func next(_ response: TestResponse) -> String? {
        guard let link = response.header("Link") else { return nil }
        #expect(link.hasPrefix("<") && link.hasSuffix(">; rel=\"next\""), "\(link)")
        return String(link.dropFirst().prefix { $0 != ">" })
    }

    @Test(arguments: SchemaVariant.allCases)
    func followingNextLinksWalksTheWholeListOnce(_ variant: SchemaVariant) async throws {
        let app = try await TestApp.start(variant)
        defer { Task { await app.stop() } }
        try StreamedListTests.seed(app.databaseURL, count: 25)
        for (first, whole) in [
            ("/api/tasks?limit=10", "/api/tasks"),
            ("/api/tasks?sort_by=title&sort_order=DESC&limit=10", "/api/tasks?sort_by=title&sort_order=desc"),
            ("/api/tasks?status=DONE&sort_by=created_at&limit=3", "/api/tasks?status=DONE&sort_by=created_at"),
        ] {
            var walked: [Int] = []
            var path: String? = first
            var pages = 0
            while let current = path {
                let page = try await app.get(current)
                #expect(page.status == 200)
                walked += try Self.ids(page)
                path = Self.next(page)
                pages += 1
                #expect(pages < 20)
            }
            let all = try await app.get(whole)
            #expect(walked == (try Self.ids(all)), "\(first)")
            #expect(Set(walked).count == walked.count)
        }
        // The last page has no link; a page past the end is empty.
        let last = try await app.get("/api/tasks?limit=10&offset=20")
        #expect(try Self.ids(last).count == 5 && last.header("Link") == nil)
        let past = try await app.get("/api/tasks?limit=10&offset=1000")
        #expect(past.status == 200 && past.text == "[]\n" && past.header("Link") == nil)
    }

    @Test func theStatusFilterKeepsOnlyThatStatusInTheAskedOrder() async throws {
        let app = try await TestApp.start(.createAll)
        defer { Task { await app.stop() } }
        try StreamedListTests.seed(app.databaseURL, count: 30)
        for status in ["TODO", "IN_PROGRESS", "DONE"] {
            let filtered = try await app.get("/api/tasks?status=\(status)&sort_by=title&sort_order=asc")
            let all = try await app.get("/api/tasks?sort_by=title&sort_order=asc").jsonArray()
            #expect(try filtered.jsonArray().map { $0["id"] as! Int } == all.filter { $0["status"] as? String == status }.map { $0["id"] as! Int })
            #expect(try filtered.jsonArray().count == 10)
        }
    }

    @Test func aLongFilteredListStreamsTheSameBytes() async throws {
        let whole = try await TestApp.start()
        let streamed = try await TestApp.start(environment: ["LIST_BUFFERED_ROWS": "5", "LIST_FETCH_ROWS": "4"], database: whole.databaseURL)
        defer { Task { await whole.stop(); await streamed.stop() } }
        try StreamedListTests.seed(whole.databaseURL, count: 100)
        for path in ["/api/tasks?status=TODO", "/api/tasks?status=DONE&sort_by=updated_at&sort_order=desc", "/api/tasks?offset=37"] {
            let a = try await whole.get(path)
            let b = try await streamed.get(path)
            #expect(b.header("Transfer-Encoding") == "chunked")
            #expect(a.status == 200 && a.body == b.body, "\(path)")
        }
    }

    @Test func badPageOrFilterValuesAreA400() async throws {
        let app = try await TestApp.start()
        defer { Task { await app.stop() } }
        for query in ["limit=0", "limit=1001", "limit=-1", "limit=abc", "limit=", "limit=1e3", "limit=%205", "limit=99999999999",
                      "offset=-1", "offset=x", "offset=2147483648", "status=todo", "status=", "status=DONE%00"] {
            let response = try await app.get("/api/tasks?\(query)")
            #expect(response.status == 400, "\(query)")
            #expect(try response.jsonObject()["error"] is String, "\(query)")
        }
        // Unknown parameters and unknown sort values are still ignored, as the original does.
        #expect(try await app.get("/api/tasks?page=3&sort_by=nope").status == 200)
    }

    @Test func aPageHasATagOfItsOwnAndRevalidates() async throws {
        let app = try await TestApp.start()
        defer { Task { await app.stop() } }
        try StreamedListTests.seed(app.databaseURL, count: 12)
        let page = try await app.get("/api/tasks?limit=5&offset=5")
        let whole = try await app.get("/api/tasks")
        let tag = try #require(page.header("ETag"))
        #expect(tag != whole.header("ETag"))
        #expect(try await app.get("/api/tasks?limit=5&offset=5", headers: [("If-None-Match", tag)]).status == 304)
        #expect(try await app.get("/api/tasks?limit=5&offset=0", headers: [("If-None-Match", tag)]).status == 200)
        _ = try await app.create("one more")
        #expect(try await app.get("/api/tasks?limit=5&offset=5", headers: [("If-None-Match", tag)]).status == 200)
    }
}
