/// One HTTP response: status, headers and the whole body, or a body written as it is produced.
public struct HTTPResponse: Sendable {
    public var status: Int
    public var headers: HTTPHeaders
    public var body: [UInt8]
    /// Produces the body instead of `body` (an answer too large to hold at once): it is sent
    /// with `Transfer-Encoding: chunked` (to an HTTP/1.0 client, until the connection closes),
    /// and each `write` waits while the client reads slower than the producer writes. When the
    /// producer throws, the connection is reset: the client sees the body cut short, never a
    /// body that looks whole.
    public var bodyStream: BodyStream?
    /// The stream has no end in sight (server-sent events): instead of one deadline for the
    /// whole body, each part written must be taken by the client within the timeout.
    public var bodyStreamIsOpenEnded = false

    public typealias BodyStream = @Sendable (ResponseBodyWriter) async throws -> Void

    public init(status: Int, headers: HTTPHeaders = HTTPHeaders(), body: [UInt8] = [], bodyStream: BodyStream? = nil) {
        self.status = status
        self.headers = headers
        self.body = body
        self.bodyStream = bodyStream
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
