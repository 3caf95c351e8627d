import Foundation
import Testing
import TestSupport
@testable import App
@testable import Server

/// `openapi.yaml` as the server serves it: valid JSON of the same document, and in step with
/// the routes the application registers. (`make conformance` checks it with outside tools.)
@Suite("OpenAPI description")
struct OpenAPIDocumentTests {
    private func document() throws -> [String: Any] {
        try #require(JSONSerialization.jsonObject(with: Data(try OpenAPIDocument.json())) as? [String: Any])
    }

    @Test func theJSONKeepsEveryScalarsType() throws {
        let document = try document()
        #expect(document["openapi"] as? String == "3.1.0")
        let info = try #require(document["info"] as? [String: Any])
        #expect(info["version"] as? String == "1.0", "a quoted number stays a string")
        let paths = try #require(document["paths"] as? [String: Any])
        let task = try #require(paths["/api/tasks/{id}"] as? [String: Any])
        let get = try #require(task["get"] as? [String: Any])
        let responses = try #require(get["responses"] as? [String: Any])
        #expect(Set(responses.keys) == ["200", "304", "404", "412", "503", "500"])
        let schemas = try #require((document["components"] as? [String: Any])?["schemas"] as? [String: Any])
        let taskSchema = try #require(schemas["Task"] as? [String: Any])
        let id = try #require((taskSchema["properties"] as? [String: Any])?["id"] as? [String: Any])
        #expect(id["maximum"] as? Int == 2_147_483_647)
        #expect(taskSchema["additionalProperties"] as? Bool == false)
        let newTask = try #require(schemas["NewTask"] as? [String: Any])
        let status = try #require((newTask["properties"] as? [String: Any])?["status"] as? [String: Any])
        #expect((status["enum"] as? [Any])?.last is NSNull, "null stays null")
        #expect(try OpenAPIDocument.json().last == UInt8(ascii: "\n"))
    }

    @Test(.enabled(if: TestPostgres.isConfigured, TestPostgres.skipReason))
    func everyRouteIsDescribedAndEveryDescribedOperationIsRouted() async throws {
        let paths = try #require(try document()["paths"] as? [String: [String: Any]])
        let described = Set(paths.flatMap { path, operations in
            operations.keys.filter { !["parameters", "head", "options"].contains($0) }.map { "\($0.uppercased()) \(path)" }
        })
        try await withTestApp { app in
            let routed = Set(app.application.routeTable.map { route in
                let path = route.template.split(separator: "/", omittingEmptySubsequences: false)
                    .map { $0.hasPrefix(":") ? "{\($0.dropFirst())}" : String($0) }.joined(separator: "/")
                return "\(route.method.rawValue) \(path)"
            })
            #expect(routed.subtracting(described).sorted() == [], "routes missing from openapi.yaml")
            #expect(described.subtracting(routed).sorted() == [], "operations in openapi.yaml that no route serves")
            #expect(routed.count > 10)

            // Every path is served with HEAD and OPTIONS too, as the description says.
            for path in paths.keys {
                let operations = try #require(paths[path])
                #expect(operations["head"] != nil && operations["options"] != nil, "\(path)")
            }
            let served = try await app.get("/api/openapi.json")
            #expect(served.status == 200 && served.header("Content-Type") == "application/json")
            #expect(served.body == (try OpenAPIDocument.json()))
            let yaml = try await app.get("/api/openapi.yaml")
            #expect(yaml.header("Content-Type") == "application/yaml" && yaml.body == OpenAPIDocument.yaml)
        }
    }
}
