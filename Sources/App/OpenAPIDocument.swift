import Server
import Yams

/// The API's OpenAPI description: `openapi.yaml` beside this file, compiled into the binary,
/// served as written and as JSON (converted once, at start-up).
enum OpenAPIDocument {
    /// The document as it is written.
    static var yaml: [UInt8] { PackageResources.openapi_yaml }

    /// What made the document impossible to turn into JSON.
    struct ConversionError: Error, CustomStringConvertible {
        let description: String
    }

    /// The document as JSON (keys in the order written, a trailing newline).
    static func json() throws -> [UInt8] {
        guard let root = try Yams.compose(yaml: String(decoding: yaml, as: UTF8.self)) else {
            throw ConversionError(description: "openapi.yaml is empty")
        }
        var json = JSONWriter(capacity: yaml.count)
        try write(root, to: &json)
        json.newline()
        return json.bytes
    }

    /// One YAML node as JSON: mappings as objects (keys as their text), sequences as arrays,
    /// scalars by their resolved tag (null, bool, int; anything else, quoted text included, as a
    /// string). Floats and aliases are refused: the document has none, and a wrong conversion
    /// must not be served.
    private static func write(_ node: Node, to json: inout JSONWriter) throws {
        switch node {
        case .mapping(let mapping):
            json.beginObject()
            for (key, value) in mapping {
                guard case .scalar(let name) = key else {
                    throw ConversionError(description: "a key at line \(key.mark?.line ?? 0) is not a scalar")
                }
                json.key(escaping: name.string)
                try write(value, to: &json)
            }
            json.endObject()
        case .sequence(let sequence):
            json.beginArray()
            for element in sequence { try write(element, to: &json) }
            json.endArray()
        case .scalar(let scalar):
            switch Tag.Name(rawValue: node.tag.rawValue) {
            case .null: json.null()
            case .bool: json.bool(node.bool ?? false)
            case .int:
                guard let value = node.int else { throw ConversionError(description: "an integer out of range at line \(scalar.mark?.line ?? 0)") }
                json.int(value)
            case .float: throw ConversionError(description: "a float at line \(scalar.mark?.line ?? 0) (not supported)")
            default: json.string(scalar.string)
            }
        case .alias:
            throw ConversionError(description: "an alias at line \(node.mark?.line ?? 0) (not supported)")
        }
    }
}

/// `GET /api/openapi.json` and `/api/openapi.yaml`: the description, answered on the loop.
struct OpenAPIRoutes: Sendable {
    /// The JSON form, converted once by `OpenAPIDocument.json()`.
    let json: [UInt8]

    func register(on router: inout Router) {
        let json = json
        router.addImmediate(.get, "/api/openapi.json") { _ in .json(200, json) }
        router.addImmediate(.get, "/api/openapi.yaml") { _ in
            HTTPResponse(status: 200, headers: HTTPHeaders([("Content-Type", "application/yaml")]), body: OpenAPIDocument.yaml)
        }
    }
}
