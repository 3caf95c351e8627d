import Foundation
import Testing
import TestSupport
@testable import App

/// The contract (../shared/CONTRACT.md) over real HTTP and a real PostgreSQL, on both schemas.
@Suite("Task API contract", .enabled(if: TestPostgres.isConfigured, TestPostgres.skipReason))
struct TaskAPITests {
    @Test(arguments: SchemaVariant.allCases)
    func createReadUpdateDelete(_ variant: SchemaVariant) async throws {
        try await withTestApp(variant) { app in

            let created = try await app.send("POST", "/api/tasks", json: #"{"title": "Write report", "description": "numbers", "extra": 1}"#)
            #expect(created.status == 201)
            #expect(created.header("Content-Type") == "application/json")
            let task = try created.jsonObject()
            #expect(task["title"] as? String == "Write report")
            #expect(task["description"] as? String == "numbers")
            #expect(task["status"] as? String == "TODO")
            #expect(isPythonISO(task["created_at"]) && isPythonISO(task["updated_at"]))
            let id = try #require(task["id"] as? Int)

            #expect(created.header("Location") == "/api/tasks/\(id)")
            #expect(created.header("Cache-Control") == nil)

            let fetched = try await app.get("/api/tasks/\(id)")
            #expect(fetched.status == 200)
            #expect(fetched.body == created.body)
            #expect(fetched.header("Cache-Control") == "no-cache")

            try await Task.sleep(for: .milliseconds(5))
            let updated = try await app.send("PUT", "/api/tasks/\(id)", json: #"{"status": "IN_PROGRESS", "description": null}"#)
            #expect(updated.status == 200)
            let after = try updated.jsonObject()
            #expect(after["title"] as? String == "Write report")
            #expect(after["description"] is NSNull)
            #expect(after["status"] as? String == "IN_PROGRESS")
            #expect(after["created_at"] as? String == task["created_at"] as? String)
            #expect((after["updated_at"] as! String) > (task["updated_at"] as! String))
            #expect(try await app.get("/api/tasks/\(id)").body == updated.body)

            let empty = try await app.send("PUT", "/api/tasks/\(id)", json: "{}")
            #expect(empty.status == 200)
            #expect(try empty.jsonObject()["status"] as? String == "IN_PROGRESS")

            let deleted = try await httpRequest(port: app.port, "DELETE", "/api/tasks/\(id)")
            #expect(deleted.status == 204)
            #expect(deleted.body.isEmpty)
            #expect(try await app.get("/api/tasks/\(id)").status == 404)
            #expect(try await httpRequest(port: app.port, "DELETE", "/api/tasks/\(id)").status == 404)
        }
    }

    @Test(arguments: SchemaVariant.allCases)
    func everyErrorOfTheContractChangesNothing(_ variant: SchemaVariant) async throws {
        try await withTestApp(variant) { app in
            let task = try await app.create("Keep me", description: "as is", status: "DONE")
            let id = task["id"] as! Int
            _ = try await app.get("/api/settings")
            let before = try app.tableSnapshot()

            let cases: [(String, String, String?, [(String, String)], Int)] = [
                ("POST", "/api/tasks", "{", [("Content-Type", "application/json")], 400),
                ("POST", "/api/tasks", "[1]", [("Content-Type", "application/json")], 400),
                ("POST", "/api/tasks", "\"title\"", [("Content-Type", "application/json")], 400),
                ("POST", "/api/tasks", "", [("Content-Type", "application/json")], 400),
                ("POST", "/api/tasks", "{}", [("Content-Type", "application/json")], 400),
                ("POST", "/api/tasks", #"{"title": null}"#, [("Content-Type", "application/json")], 400),
                ("POST", "/api/tasks", #"{"title": 5}"#, [("Content-Type", "application/json")], 400),
                ("POST", "/api/tasks", #"{"title": "  \t\n "}"#, [("Content-Type", "application/json")], 400),
                ("POST", "/api/tasks", "{\"title\": \"\(String(repeating: "x", count: 201))\"}", [("Content-Type", "application/json")], 400),
                ("POST", "/api/tasks", #"{"title": "x", "description": 5}"#, [("Content-Type", "application/json")], 400),
                ("POST", "/api/tasks", #"{"title": "x", "status": "BOGUS"}"#, [("Content-Type", "application/json")], 400),
                ("POST", "/api/tasks", #"{"title": "x", "status": "todo"}"#, [("Content-Type", "application/json")], 400),
                ("POST", "/api/tasks", #"{"title": "a\u0000b"}"#, [("Content-Type", "application/json")], 400),
                ("POST", "/api/tasks", #"{"title": "x", "description": "\u0000"}"#, [("Content-Type", "application/json")], 400),
                ("POST", "/api/tasks", #"{"title": "\ud800"}"#, [("Content-Type", "application/json")], 400),
                ("POST", "/api/tasks", #"{"title": "x"}"#, [("Content-Type", "text/plain")], 415),
                ("POST", "/api/tasks", #"{"title": "x"}"#, [("Content-Type", "application/x-www-form-urlencoded")], 415),
                ("PUT", "/api/tasks/\(id)", #"{"title": "changed", "status": "BOGUS"}"#, [("Content-Type", "application/json")], 400),
                ("PUT", "/api/tasks/\(id)", #"{"title": null}"#, [("Content-Type", "application/json")], 400),
                ("PUT", "/api/tasks/\(id)", #"{"status": null}"#, [("Content-Type", "application/json")], 400),
                ("PUT", "/api/tasks/\(id)", #"{"description": ["x"], "title": "changed"}"#, [("Content-Type", "application/json")], 400),
                ("PUT", "/api/tasks/\(id)", "{", [("Content-Type", "application/json")], 400),
                ("PUT", "/api/tasks/\(id)", #"{"title": "x"}"#, [("Content-Type", "text/html")], 415),
                ("PUT", "/api/tasks/999999", #"{"title": "x"}"#, [("Content-Type", "application/json")], 404),
                ("PUT", "/api/tasks/abc", #"{"title": "x"}"#, [("Content-Type", "application/json")], 404),
                ("DELETE", "/api/tasks/abc", nil, [], 404),
                ("DELETE", "/api/tasks/2147483648", nil, [], 404),
                ("PUT", "/api/settings", #"{"dark_mode": 1}"#, [("Content-Type", "application/json")], 400),
                ("PUT", "/api/settings", #"{"dark_mode": "yes"}"#, [("Content-Type", "application/json")], 400),
                ("PUT", "/api/settings", #"{"dark_mode": null}"#, [("Content-Type", "application/json")], 400),
                ("PUT", "/api/settings", "{", [("Content-Type", "application/json")], 400),
                ("PATCH", "/api/tasks/\(id)", "{}", [("Content-Type", "application/json")], 405),
                ("POST", "/api/settings", "{}", [("Content-Type", "application/json")], 405),
                ("GET", "/nope", nil, [], 404),
                ("GET", "/api/tasks/", nil, [], 404),
            ]
            for (method, path, body, headers, status) in cases {
                let response = try await httpRequest(port: app.port, method, path, headers: headers, body: body.map { Array($0.utf8) })
                #expect(response.status == status, "\(method) \(path) \(body ?? "")")
                #expect(response.header("Content-Type") == "application/json", "\(method) \(path)")
                let error = try? response.jsonObject()["error"] as? String
                #expect(error?.isEmpty == false, "\(method) \(path): \(response.text)")
                if status == 405 { #expect(response.header("Allow") != nil) }
            }
            #expect(try app.tableSnapshot() == before)
            #expect(try await app.get("/api/tasks/\(id)").jsonObject()["title"] as? String == "Keep me")
        }
    }

    @Test func idsThatAreNotPlainIntegersAreNotFound() async throws {
        try await withTestApp() { app in
            try await app.create("seven")
            for path in ["abc", "-1", "0", "1.5", "99999999999999999999", "2147483648", "1e3", "+1"] {
                let response = try await app.get("/api/tasks/\(path)")
                #expect(response.status == 404, "\(path)")
                #expect(response.text == "{\"error\":\"Task not found\"}\n", "\(path)")
            }
            #expect(try await app.get("/api/tasks/1").status == 200)
            #expect(try await app.get("/api/tasks/001").status == 200)
        }
    }

    @Test(arguments: SchemaVariant.allCases)
    func listSortsByEveryFieldBothWays(_ variant: SchemaVariant) async throws {
        try await withTestApp(variant) { app in
            try await app.create("banana", status: "DONE")
            try await app.create("Apple", status: "TODO")
            try await app.create("cherry", status: "IN_PROGRESS")
            try await app.create("apple", status: "DONE")
            _ = try await app.send("PUT", "/api/tasks/2", json: #"{"description": "touched"}"#)

            let unsorted = try await app.get("/api/tasks").jsonArray()
            #expect(unsorted.map { $0["id"] as! Int } == [1, 2, 3, 4])
            let bogus = try await app.get("/api/tasks?sort_by=id&sort_order=desc").jsonArray()
            #expect(bogus.map { $0["id"] as! Int } == [1, 2, 3, 4])

            for field in ["status", "created_at", "updated_at", "title"] {
                for order in ["asc", "desc", "DESC", "whatever"] {
                    let list = try await app.get("/api/tasks?sort_by=\(field)&sort_order=\(order)").jsonArray()
                    #expect(list.count == 4)
                    let descending = order.lowercased() == "desc"
                    for (a, b) in zip(list, list.dropFirst()) {
                        let x = a[field] as! String, y = b[field] as! String
                        if x == y {
                            #expect((a["id"] as! Int) < (b["id"] as! Int), "tie on \(field) breaks by id")
                        } else if field != "title" {
                            #expect(descending ? x > y : x < y, "\(field) \(order): \(x) then \(y)")
                        }
                    }
                }
            }
            let statuses = try await app.get("/api/tasks?sort_by=status").jsonArray().map { $0["status"] as! String }
            #expect(statuses == ["DONE", "DONE", "IN_PROGRESS", "TODO"])
        }
    }

    @Test(arguments: SchemaVariant.allCases)
    func textIsStoredVerbatimAndTitlesCountCodePoints(_ variant: SchemaVariant) async throws {
        try await withTestApp(variant) { app in
            let emoji = String(repeating: "😀", count: 200)
            let made = try await app.create(emoji)
            #expect(made["title"] as? String == emoji)
            let tooLong = try await app.send("POST", "/api/tasks", json: "{\"title\": \"\(String(repeating: "😀", count: 200))a\"}")
            #expect(tooLong.status == 400)

            let samples = [
                "Robert'); DROP TABLE tasks;--", "e\u{301} vs é", "Ünïcödé \"quoted\" \\ back/slash <b>",
                "tab\tnew\nline", "中文 עברית 🧪", "  padded  ",
            ]
            for text in samples {
                let task = try await app.create(text, description: text)
                let fetched = try await app.get("/api/tasks/\(task["id"] as! Int)").jsonObject()
                #expect(fetched["title"] as? String == text)
                #expect(fetched["description"] as? String == text)
            }
            #expect(try await app.get("/api/tasks").jsonArray().count == samples.count + 1)
        }
    }

    @Test(arguments: SchemaVariant.allCases)
    func settingsRow(_ variant: SchemaVariant) async throws {
        try await withTestApp(variant) { app in
            let first = try await app.get("/api/settings")
            #expect(first.status == 200)
            let settings = try first.jsonObject()
            #expect(settings["dark_mode"] as? Bool == false)
            #expect(isPythonISO(settings["updated_at"]))
            let on = try await app.send("PUT", "/api/settings", json: #"{"dark_mode": true}"#)
            #expect(try on.jsonObject()["dark_mode"] as? Bool == true)
            #expect(try await app.get("/api/settings").body == on.body)
            let off = try await app.send("PUT", "/api/settings", json: "{}")
            #expect(try off.jsonObject()["dark_mode"] as? Bool == false)
            #expect(try TestPostgres.psql(app.databaseURL, "SELECT count(*) FROM settings") == "1")
        }
    }

    @Test(arguments: SchemaVariant.allCases)
    func concurrentFirstSettingsRequestsMakeOneRow(_ variant: SchemaVariant) async throws {
        try await withTestApp(variant) { app in
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for index in 0..<40 {
                    group.addTask {
                        index.isMultiple(of: 4)
                            ? try await app.send("PUT", "/api/settings", json: #"{"dark_mode": true}"#).status
                            : try await app.get("/api/settings").status
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(statuses.allSatisfy { $0 == 200 })
            #expect(try TestPostgres.psql(app.databaseURL, "SELECT count(*) FROM settings") == "1")
        }
    }

    @Test(arguments: SchemaVariant.allCases)
    func aThousandConcurrentCreatesFromFiftyClients(_ variant: SchemaVariant) async throws {
        try await withTestApp(variant) { app in
            let port = app.port
            let ids = try await withThrowingTaskGroup(of: [Int].self) { group in
                for client in 0..<50 {
                    group.addTask {
                        try await offCooperativePool {
                            let connection = try RawConnection(port: port)
                            var ids: [Int] = []
                            for index in 0..<20 {
                                let body = "{\"title\": \"c\(client) t\(index)\"}"
                                try connection.send("POST /api/tasks HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
                                let response = try connection.readResponse()
                                guard response.status == 201 else { throw TestClientError("status \(response.status): \(response.text)") }
                                ids.append(try response.jsonObject()["id"] as! Int)
                            }
                            return ids
                        }
                    }
                }
                return try await group.reduce(into: []) { $0 += $1 }
            }
            #expect(ids.count == 1000)
            #expect(Set(ids).count == 1000)
            let listed = try await app.get("/api/tasks").jsonArray().map { $0["id"] as! Int }
            #expect(Set(listed) == Set(ids))
        }
    }

    @Test func headCorsAndOperations() async throws {
        try await withTestApp() { app in
            try await app.create("x")
            let get = try await app.get("/api/tasks/1")
            let head = try await httpRequest(port: app.port, "HEAD", "/api/tasks/1")
            #expect(head.status == 200)
            #expect(head.header("Content-Length") == String(get.body.count))

            let allowed = try await app.get("/api/tasks/1", headers: [("Origin", "http://localhost:5173")])
            #expect(allowed.header("Access-Control-Allow-Origin") == "http://localhost:5173")
            #expect(allowed.header("Vary") == "Origin")
            let foreign = try await app.get("/api/tasks/1", headers: [("Origin", "http://evil.example")])
            #expect(foreign.header("Access-Control-Allow-Origin") == nil)
            let preflight = try await httpRequest(port: app.port, "OPTIONS", "/api/tasks", headers: [
                ("Origin", "https://taskm.duckdns.org"), ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "content-type"),
            ])
            #expect(preflight.status == 204)
            #expect(preflight.header("Access-Control-Allow-Methods")?.contains("DELETE") == true)
            #expect(preflight.header("Access-Control-Allow-Headers") == "content-type")

            let health = try await app.get("/healthz")
            #expect(health.text == "{\"status\":\"ok\"}\n")
            #expect(health.header("Cache-Control") == "no-store" && head.header("Cache-Control") == "no-cache")
            #expect(try await app.get("/no/such/path").header("Cache-Control") == "no-store")
            #expect(try await app.get("/readyz").status == 200)
            let metrics = try await app.get("/metrics")
            #expect(metrics.status == 200)
            #expect(metrics.header("Content-Type")?.hasPrefix("text/plain") == true)
        }
    }

    @Test func bodyLimitIsConfigurable() async throws {
        try await withTestApp(environment: ["HTTP_MAX_BODY_BYTES": "100"]) { app in
            let response = try await app.send("POST", "/api/tasks", json: "{\"title\": \"\(String(repeating: "x", count: 120))\"}")
            #expect(response.status == 413)
            #expect(try response.jsonObject()["error"] != nil)
            #expect(try await app.get("/api/tasks").jsonArray().isEmpty)
        }
    }
}
