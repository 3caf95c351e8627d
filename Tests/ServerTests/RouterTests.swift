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

    @Test func jsonWriterEscapesLikePython() {
        var json = JSONWriter()
        json.beginObject()
        json.key("a")
        json.string("é\"\\\n\u{01}😀/")
        json.key("b")
        json.beginArray()
        json.int(-12)
        json.bool(true)
        json.null()
        json.endArray()
        json.endObject()
        #expect(String(decoding: json.bytes, as: UTF8.self) == #"{"a":"\u00e9\"\\\n\u0001\ud83d\ude00/","b":[-12,true,null]}"#)
    }

    @Test func byteStringsNeedEscapingExactlyWhenAByteDoes() {
        // Every byte value at every position of strings up to 17 bytes long (the 8-byte word
        // check and the byte tail), written from bytes and from a String, against the rule.
        for length in 1...17 {
            for position in 0..<length {
                for byte in UInt8.min...UInt8.max where byte < 0x80 {
                    var bytes = [UInt8](repeating: UInt8(ascii: "a"), count: length)
                    bytes[position] = byte
                    var fromBytes = JSONWriter()
                    fromBytes.string(utf8: bytes[...])
                    var fromString = JSONWriter()
                    fromString.string(String(decoding: bytes, as: UTF8.self))
                    let plain = byte >= 0x20 && byte < 0x7F && byte != 0x22 && byte != 0x5C
                    let copied = fromBytes.bytes == [0x22] + bytes + [0x22]
                    if plain != copied || fromBytes.bytes != fromString.bytes {
                        Issue.record("byte \(byte) at \(position) of \(length): \(String(decoding: fromBytes.bytes, as: UTF8.self))")
                        return
                    }
                }
            }
        }
        var unicode = JSONWriter()
        unicode.string(utf8: Array("aé😀bcdefghij".utf8)[...])
        #expect(String(decoding: unicode.bytes, as: UTF8.self) == #""a\u00e9\ud83d\ude00bcdefghij""#)
    }
}
