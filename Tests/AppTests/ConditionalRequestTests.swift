import Foundation
import Testing
import TestSupport
@testable import App

/// ETags, conditional requests (RFC 9110 §13.1–13.2) and idempotent creates, over real HTTP and
/// a real PostgreSQL, on both schemas.
@Suite("Conditional requests and retries", .enabled(if: TestPostgres.isConfigured, TestPostgres.skipReason))
struct ConditionalRequestTests {
    static let json = [("Content-Type", "application/json")]

    func put(_ app: TestApp, _ path: String, _ body: String, _ headers: [(String, String)]) async throws -> TestResponse {
        try await httpRequest(port: app.port, "PUT", path, headers: Self.json + headers, body: Array(body.utf8))
    }

    func post(_ app: TestApp, _ body: String, _ headers: [(String, String)]) async throws -> TestResponse {
        try await httpRequest(port: app.port, "POST", "/api/tasks", headers: Self.json + headers, body: Array(body.utf8))
    }

    @Test(arguments: SchemaVariant.allCases)
    func aTaskReadCarriesAStrongTagThatRevalidates(_ variant: SchemaVariant) async throws {
        try await withTestApp(variant) { app in
            let created = try await app.send("POST", "/api/tasks", json: #"{"title": "tagged"}"#)
            let id = try #require(try created.jsonObject()["id"] as? Int)
            let etag = try #require(created.header("ETag"))
            #expect(etag.range(of: #"^"[0-9]+\.-?[0-9]+"$"#, options: .regularExpression) != nil)

            let fetched = try await app.get("/api/tasks/\(id)")
            #expect(fetched.header("ETag") == etag)
            #expect(fetched.header("Cache-Control") == "no-cache")

            // Weak comparison for If-None-Match: the tag itself, its weak form, in a list, or *.
            for condition in [etag, "W/\(etag)", #""nope", \#(etag)"#, "*", #"W/"x",\#t\#(etag) , "y""#] {
                let answer = try await app.get("/api/tasks/\(id)", headers: [("If-None-Match", condition)])
                #expect(answer.status == 304, "If-None-Match: \(condition)")
                #expect(answer.body.isEmpty)
                #expect(answer.header("ETag") == etag)
                #expect(answer.header("Cache-Control") == "no-cache")
                #expect(answer.header("Content-Type") == nil && answer.header("Content-Length") == nil)
            }
            let head = try await httpRequest(port: app.port, "HEAD", "/api/tasks/\(id)", headers: [("If-None-Match", etag)])
            #expect(head.status == 304)
            for condition in [#""other""#, "W/\"other\"", "garbage", ""] {
                let answer = try await app.get("/api/tasks/\(id)", headers: [("If-None-Match", condition)])
                #expect(answer.status == 200, "If-None-Match: \(condition)")
                #expect(answer.body == created.body)
            }
            // Two field lines count as one list.
            let twoLines = try await app.get("/api/tasks/\(id)", headers: [("If-None-Match", #""a""#), ("If-None-Match", etag)])
            #expect(twoLines.status == 304)
            // If-Match on a read: strong comparison, 412 when it fails.
            #expect(try await app.get("/api/tasks/\(id)", headers: [("If-Match", etag)]).status == 200)
            #expect(try await app.get("/api/tasks/\(id)", headers: [("If-Match", "W/\(etag)")]).status == 412)
            // A precondition on a missing task: still 404.
            #expect(try await app.get("/api/tasks/999999", headers: [("If-None-Match", "*")]).status == 404)
            #expect(try await app.get("/api/tasks/999999", headers: [("If-Match", "*")]).status == 404)

            // Any change of the representation changes the tag.
            let updated = try await app.send("PUT", "/api/tasks/\(id)", json: #"{"title": "tagged"}"#)
            #expect(updated.header("ETag") != etag)
            #expect(try await app.get("/api/tasks/\(id)", headers: [("If-None-Match", etag)]).status == 200)
        }
    }

    @Test(arguments: SchemaVariant.allCases)
    func writesHonourIfMatchAtomically(_ variant: SchemaVariant) async throws {
        try await withTestApp(variant) { app in
            let created = try await app.send("POST", "/api/tasks", json: #"{"title": "edit me"}"#)
            let id = try #require(try created.jsonObject()["id"] as? Int)
            let etag = try #require(created.header("ETag"))
            let path = "/api/tasks/\(id)"
            let before = try app.tableSnapshot()

            // Failing preconditions: 412, nothing written.
            for (name, value) in [
                ("If-Match", #""1.1704110400000000""#), ("If-Match", "W/\(etag)"), ("If-Match", "not-a-tag"),
                ("If-Match", #""a,b""#), ("If-None-Match", "*"), ("If-None-Match", etag), ("If-None-Match", "W/\(etag)"),
            ] {
                let answer = try await put(app, path, #"{"title": "lost"}"#, [(name, value)])
                #expect(answer.status == 412, "\(name): \(value)")
                #expect(try answer.jsonObject()["error"] is String)
                let deleted = try await httpRequest(port: app.port, "DELETE", path, headers: [(name, value)])
                #expect(deleted.status == 412, "DELETE \(name): \(value)")
            }
            #expect(try app.tableSnapshot() == before)

            // A missing task is 404 whatever the precondition; a bad body is 400 first.
            #expect(try await put(app, "/api/tasks/999999", #"{"title": "x"}"#, [("If-Match", etag)]).status == 404)
            #expect(try await httpRequest(port: app.port, "DELETE", "/api/tasks/999999", headers: [("If-Match", "*")]).status == 404)
            #expect(try await put(app, path, #"{"title": ""}"#, [("If-Match", #""stale""#)]).status == 400)

            // Passing ones: the current tag (alone or in a list), *, or an If-None-Match it is not in.
            let first = try await put(app, path, #"{"title": "one"}"#, [("If-Match", #""stale", \#(etag)"#)])
            #expect(first.status == 200)
            let second = try await put(app, path, #"{"title": "two"}"#, [("If-Match", "*")])
            #expect(second.status == 200)
            let third = try await put(app, path, #"{"status": "DONE"}"#, [("If-None-Match", etag)])
            #expect(third.status == 200)
            let current = try #require(third.header("ETag"))
            #expect(Set([etag, first.header("ETag"), second.header("ETag"), current]).count == 4)
            #expect(try await app.get(path).header("ETag") == current)
            // The old tag is stale now.
            #expect(try await put(app, path, #"{"title": "late"}"#, [("If-Match", etag)]).status == 412)
            #expect(try await app.get(path).body == third.body)

            #expect(try await httpRequest(port: app.port, "DELETE", path, headers: [("If-Match", etag)]).status == 412)
            #expect(try await httpRequest(port: app.port, "DELETE", path, headers: [("If-Match", current)]).status == 204)
            #expect(try await app.get(path).status == 404)
        }
    }

    @Test func ifMatchCanBeRequired() async throws {
        try await withTestApp(environment: ["REQUIRE_IF_MATCH": "true"]) { app in
            let created = try await app.send("POST", "/api/tasks", json: #"{"title": "guarded"}"#)
            #expect(created.status == 201)
            let id = try #require(try created.jsonObject()["id"] as? Int)
            let put = try await app.send("PUT", "/api/tasks/\(id)", json: #"{"title": "blind"}"#)
            #expect(put.status == 428)
            #expect(try put.jsonObject()["error"] as? String == "If-Match is required: send the ETag of the task you read")
            #expect(try await httpRequest(port: app.port, "DELETE", "/api/tasks/\(id)").status == 428)
            // Settings are not guarded by it.
            #expect(try await app.send("PUT", "/api/settings", json: #"{"dark_mode": true}"#).status == 200)
            let etag = try #require(created.header("ETag"))
            #expect(try await self.put(app, "/api/tasks/\(id)", #"{"title": "seen"}"#, [("If-Match", etag)]).status == 200)
        }
    }

    @Test(arguments: SchemaVariant.allCases)
    func settingsCarryATagAndHonourIfMatch(_ variant: SchemaVariant) async throws {
        try await withTestApp(variant) { app in
            let settings = try await app.get("/api/settings")
            let etag = try #require(settings.header("ETag"))
            #expect(settings.header("Cache-Control") == "no-cache")
            #expect(try await app.get("/api/settings", headers: [("If-None-Match", etag)]).status == 304)
            let stale = try await put(app, "/api/settings", #"{"dark_mode": true}"#, [("If-Match", #""0000""#)])
            #expect(stale.status == 412)
            #expect(try await app.get("/api/settings").body == settings.body)
            let written = try await put(app, "/api/settings", #"{"dark_mode": true}"#, [("If-Match", etag)])
            #expect(written.status == 200)
            #expect(written.header("ETag") != etag)
            #expect(try await app.get("/api/settings", headers: [("If-None-Match", etag)]).status == 200)
            #expect(try await put(app, "/api/settings", #"{"dark_mode": false}"#, [("If-None-Match", "*")]).status == 412)
        }
    }

    @Test func conditionalPutOnSettingsBeforeTheRowExists() async throws {
        try await withTestApp { app in
            #expect(try await put(app, "/api/settings", #"{"dark_mode": true}"#, [("If-Match", #""0000""#)]).status == 412)
            let created = try await put(app, "/api/settings", #"{"dark_mode": true}"#, [("If-Match", "*")])
            #expect(created.status == 200)
            #expect(try created.jsonObject()["dark_mode"] as? Bool == true)
            #expect(try TestPostgres.psql(app.databaseURL, "SELECT count(*) FROM settings") == "1")
        }
    }

    @Test(arguments: SchemaVariant.allCases)
    func theListRevalidatesFromItsRevision(_ variant: SchemaVariant) async throws {
        try await withTestApp(variant) { app in
            let empty = try await app.get("/api/tasks")
            #expect(empty.text == "[]\n")
            let emptyTag = try #require(empty.header("ETag"))
            #expect(emptyTag.hasPrefix("W/\""))
            #expect(empty.header("Cache-Control") == "no-cache")
            #expect(try await app.get("/api/tasks", headers: [("If-None-Match", emptyTag)]).status == 304)

            try await app.create("a")
            try await app.create("b")
            let path = "/api/tasks?sort_by=created_at&sort_order=desc"
            let list = try await app.get(path)
            let tag = try #require(list.header("ETag"))
            #expect(tag != emptyTag)
            let notModified = try await app.get(path, headers: [("If-None-Match", tag)])
            #expect(notModified.status == 304 && notModified.body.isEmpty && notModified.header("ETag") == tag)
            #expect(try await httpRequest(port: app.port, "HEAD", path, headers: [("If-None-Match", tag)]).status == 304)
            // Each order is its own representation.
            let other = try await app.get("/api/tasks?sort_by=title")
            #expect(other.header("ETag") != tag)
            #expect(try await app.get("/api/tasks?sort_by=title", headers: [("If-None-Match", tag)]).status == 200)
            // An unknown sort order is the default one.
            #expect(try await app.get("/api/tasks?sort_by=bogus").header("ETag") == (try await app.get("/api/tasks").header("ETag")))

            // Every kind of write through the server changes it.
            var seen = Set([tag])
            let id = try #require(try list.jsonArray().first?["id"] as? Int)
            for (method, target, body) in [
                ("POST", "/api/tasks", #"{"title": "c"}"#), ("PUT", "/api/tasks/\(id)", #"{"title": "a2"}"#), ("DELETE", "/api/tasks/\(id)", ""),
            ] {
                _ = try await httpRequest(port: app.port, method, target, headers: Self.json, body: body.isEmpty ? nil : Array(body.utf8))
                let answer = try await app.get(path, headers: [("If-None-Match", Array(seen).joined(separator: ", "))])
                #expect(answer.status == 200, "after \(method)")
                #expect(seen.insert(try #require(answer.header("ETag"))).inserted)
            }
            // Writes made outside the server (psql, the Flask service) change it too.
            let current = try await app.get(path)
            let currentTag = try #require(current.header("ETag"))
            for sql in [
                "UPDATE tasks SET title = 'from psql' WHERE id = (SELECT min(id) FROM tasks)",
                "INSERT INTO tasks (title, status, created_at, updated_at) VALUES ('psql', 'TODO', now(), now())",
                "DELETE FROM tasks WHERE title = 'psql'", "TRUNCATE tasks",
            ] {
                let tagBefore = try #require(try await app.get(path).header("ETag"))
                try TestPostgres.psql(app.databaseURL, sql)
                let answer = try await app.get(path, headers: [("If-None-Match", tagBefore)])
                #expect(answer.status == 200, "after \(sql)")
                #expect(answer.header("ETag") != tagBefore)
            }
            #expect(try await app.get(path, headers: [("If-None-Match", currentTag)]).status == 200)
        }
    }

    @Test func withoutItsTriggerTheListGoesUntagged() async throws {
        try await withTestApp { app in
            try await app.create("a")
            let tag = try #require(try await app.get("/api/tasks").header("ETag"))
            try TestPostgres.psql(app.databaseURL, "ALTER TABLE tasks DISABLE TRIGGER task_management_revision")
            let untagged = try await app.get("/api/tasks", headers: [("If-None-Match", tag)])
            #expect(untagged.status == 200 && untagged.header("ETag") == nil)
            #expect(untagged.header("Cache-Control") == "no-store")
            try TestPostgres.psql(app.databaseURL, "ALTER TABLE tasks ENABLE TRIGGER task_management_revision")
            #expect(try await app.get("/api/tasks", headers: [("If-None-Match", tag)]).status == 304)
            try TestPostgres.psql(app.databaseURL, "DELETE FROM task_management_revisions WHERE slot = 0")
            #expect(try await app.get("/api/tasks", headers: [("If-None-Match", tag)]).header("ETag") == nil)
        }
    }

    @Test func foldingGoneBackendsKeepsTheRevision() async throws {
        try await withTestApp { app in
            try await app.create("a")
            // Rows of backends that no longer exist (no live pid is negative), and the live ones.
            try TestPostgres.psql(app.databaseURL, "INSERT INTO task_management_revisions VALUES ('tasks', -1, 5), ('tasks', -2, 7)")
            let tag = try #require(try await app.get("/api/tasks").header("ETag"))
            let rowsBefore = Int(try TestPostgres.psql(app.databaseURL, "SELECT count(*) FROM task_management_revisions"))!
            #expect(await app.application.housekeeping.compactRevisionCounter() >= 2)
            let rowsAfter = Int(try TestPostgres.psql(app.databaseURL, "SELECT count(*) FROM task_management_revisions"))!
            #expect(rowsAfter <= rowsBefore - 2)
            #expect(try TestPostgres.psql(app.databaseURL, "SELECT count(*) FROM task_management_revisions WHERE slot < 0") == "0")
            #expect(try await app.get("/api/tasks", headers: [("If-None-Match", tag)]).status == 304)
            try await app.create("b")
            #expect(try await app.get("/api/tasks", headers: [("If-None-Match", tag)]).status == 200)
        }
    }

    @Test func aRetriedCreateWithItsKeyReplaysTheFirstAnswer() async throws {
        try await withTestApp { app in
            let key = [("Idempotency-Key", "\"retry-\(UUID().uuidString)\"")]
            let first = try await post(app, #"{"title": "once", "description": null}"#, key)
            #expect(first.status == 201)
            #expect(first.header("Idempotent-Replayed") == nil)
            let replay = try await post(app, #"{"description": null,  "title": "once"}"#, key)
            #expect(replay.status == 201)
            #expect(replay.body == first.body)
            #expect(replay.header("Idempotent-Replayed") == "true")
            #expect(replay.header("Location") == first.header("Location"))
            #expect(replay.header("ETag") == first.header("ETag"))
            #expect(replay.header("Content-Type") == "application/json")
            // The replay is the recorded answer, even after the task changed.
            let id = try #require(try first.jsonObject()["id"] as? Int)
            _ = try await app.send("PUT", "/api/tasks/\(id)", json: #"{"title": "changed"}"#)
            #expect(try await post(app, #"{"title": "once"}"#, key).body == first.body)
            #expect(try TestPostgres.psql(app.databaseURL, "SELECT count(*) FROM tasks") == "1")

            // The same key for another request: 422, nothing written.
            let reused = try await post(app, #"{"title": "twice"}"#, key)
            #expect(reused.status == 422)
            #expect(try reused.jsonObject()["error"] as? String == "This Idempotency-Key was already used for a different request")
            #expect(try await post(app, #"{"title": "once", "status": "DONE"}"#, key).status == 422)
            #expect(try await post(app, #"{"title": "once", "description": ""}"#, key).status == 422)
            #expect(try TestPostgres.psql(app.databaseURL, "SELECT count(*) FROM tasks") == "1")

            // A bare key is the same key as its quoted form.
            let bare = try await post(app, #"{"title": "bare"}"#, [("Idempotency-Key", "k-1")])
            let quoted = try await post(app, #"{"title": "bare"}"#, [("Idempotency-Key", #""k-1""#)])
            #expect(bare.status == 201 && quoted.header("Idempotent-Replayed") == "true" && quoted.body == bare.body)

            // Malformed keys: 400, nothing written; an invalid body is 400 and not recorded.
            for value in ["", #""""#, String(repeating: "k", count: 256), "two words", #""open"#, #""bad\escape""#, "caf\u{e9}"] {
                let answer = try await post(app, #"{"title": "x"}"#, [("Idempotency-Key", value)])
                #expect(answer.status == 400, "Idempotency-Key: \(value)")
            }
            #expect(try await post(app, #"{"title": "x"}"#, [("Idempotency-Key", "a"), ("Idempotency-Key", "b")]).status == 400)
            #expect(try await post(app, #"{"title": ""}"#, [("Idempotency-Key", "fresh")]).status == 400)
            #expect(try await post(app, #"{"title": "fresh"}"#, [("Idempotency-Key", "fresh")]).status == 201)
            #expect(try TestPostgres.psql(app.databaseURL, "SELECT count(*) FROM tasks") == "3")
        }
    }

    @Test func aRecordedAnswerChangedByHandStillReplaysWithoutCrashing() async throws {
        try await withTestApp { app in
            let key = [("Idempotency-Key", "edited-by-hand")]
            let first = try await post(app, #"{"title": "kept"}"#, key)
            #expect(first.status == 201)
            try TestPostgres.psql(app.databaseURL, #"UPDATE task_management_idempotency_keys SET etag = 'not "a" tag'"#)
            let replay = try await post(app, #"{"title": "kept"}"#, key)
            #expect(replay.status == 201 && replay.body == first.body && replay.header("ETag") == nil)
            #expect(replay.header("Idempotent-Replayed") == "true")
            #expect(try await app.get("/healthz").status == 200)
        }
    }

    @Test func aKeyWhoseFirstRequestIsInFlightIsAnswered409() async throws {
        try await withTestApp { app in
            let key = "in-flight-\(UUID().uuidString)"
            // Another session holds the key's lock, as a first request still running would.
            let holder = Task {
                try await offCooperativePool {
                    try TestPostgres.psql(app.databaseURL, "BEGIN; SELECT pg_advisory_xact_lock(\(AdvisoryLock.idempotencyKeys), hashtext('\(key)')); SELECT pg_sleep(3); COMMIT;")
                }
            }
            let deadline = Date().addingTimeInterval(5)
            while try TestPostgres.psql(app.databaseURL, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = \(AdvisoryLock.idempotencyKeys)") != "1" {
                #expect(Date() < deadline)
                try await Task.sleep(for: .milliseconds(20))
            }
            let answer = try await post(app, #"{"title": "wait"}"#, [("Idempotency-Key", key)])
            #expect(answer.status == 409)
            #expect(answer.header("Retry-After") == "1")
            _ = try await holder.value
            #expect(try await post(app, #"{"title": "wait"}"#, [("Idempotency-Key", key)]).status == 201)
            #expect(try TestPostgres.psql(app.databaseURL, "SELECT count(*) FROM tasks") == "1")
        }
    }

    @Test func expiredKeysAreForgottenAndPurged() async throws {
        try await withTestApp(environment: ["IDEMPOTENCY_KEY_TTL_S": "1"]) { app in
            #expect(try await post(app, #"{"title": "first"}"#, [("Idempotency-Key", "short-lived")]).status == 201)
            #expect(try await post(app, #"{"title": "other"}"#, [("Idempotency-Key", "keep")]).status == 201)
            try await Task.sleep(for: .milliseconds(1200))
            // Expired: the key is free again, for any request.
            let again = try await post(app, #"{"title": "second"}"#, [("Idempotency-Key", "short-lived")])
            #expect(again.status == 201 && again.header("Idempotent-Replayed") == nil)
            #expect(try TestPostgres.psql(app.databaseURL, "SELECT count(*) FROM task_management_idempotency_keys") == "2")
            try await Task.sleep(for: .milliseconds(1200))
            #expect(await app.application.housekeeping.purgeExpiredKeys() == 2)
            #expect(try TestPostgres.psql(app.databaseURL, "SELECT count(*) FROM task_management_idempotency_keys") == "0")
        }
    }
}
