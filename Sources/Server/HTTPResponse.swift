/// One HTTP response: status, headers and the whole body.
public struct HTTPResponse: Sendable {
    public var status: Int
    public var headers: HTTPHeaders
    public var body: [UInt8]

    public init(status: Int, headers: HTTPHeaders = HTTPHeaders(), body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// A response with `Content-Type: application/json` and `body` as written.
    public static func json(_ status: Int, _ body: [UInt8]) -> HTTPResponse {
        HTTPResponse(status: status, headers: jsonHeaders, body: body)
    }

    /// Shared by every JSON response (copied only when one adds a header).
    private static let jsonHeaders = HTTPHeaders([("Content-Type", "application/json")])

    /// The JSON error shape every error uses: `{"error":"<message>"}`.
    public static func error(_ status: Int, _ message: String) -> HTTPResponse {
        var writer = JSONWriter()
        writer.beginObject()
        writer.key("error")
        writer.string(message)
        writer.endObject()
        writer.newline()
        return .json(status, writer.bytes)
    }

    /// The same error as RFC 9457 problem details (`application/problem+json`): `type`
    /// `about:blank`, the status's reason phrase as `title`, the message as `detail`, and as
    /// `error` too, so a client reading either shape finds it.
    public static func problem(_ status: Int, _ message: String) -> HTTPResponse {
        var writer = JSONWriter()
        writer.beginObject()
        writer.key("detail")
        writer.string(message)
        writer.key("error")
        writer.string(message)
        writer.key("status")
        writer.int(status)
        writer.key("title")
        writer.string(reasonPhrase(status))
        writer.key("type")
        writer.string("about:blank")
        writer.endObject()
        writer.newline()
        return HTTPResponse(status: status, headers: problemHeaders, body: writer.bytes)
    }

    private static let problemHeaders = HTTPHeaders([("Content-Type", "application/problem+json")])
}

/// An error that already knows its HTTP answer; the router sends it as is.
public struct HTTPError: Error, Sendable {
    public let status: Int
    /// What the body's `error` says.
    public let message: String
    /// Headers the answer carries besides its content type (`Allow`, say).
    public let headers: [(String, String)]

    public init(_ status: Int, _ message: String, headers: [(String, String)] = []) {
        self.status = status
        self.message = message
        self.headers = headers
    }

    /// The error as `{"error": message}` with its headers.
    public var response: HTTPResponse {
        var response = HTTPResponse.error(status, message)
        for (name, value) in headers { response.headers[name] = value }
        return response
    }
}
