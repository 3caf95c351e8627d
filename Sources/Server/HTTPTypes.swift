// MARK: - Method

/// An HTTP request method, kept as sent (methods are case-sensitive).
public struct HTTPMethod: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String
    public init(_ rawValue: String) { self.rawValue = rawValue }

    public static let get = HTTPMethod("GET")
    public static let head = HTTPMethod("HEAD")
    public static let post = HTTPMethod("POST")
    public static let put = HTTPMethod("PUT")
    public static let delete = HTTPMethod("DELETE")
    public static let options = HTTPMethod("OPTIONS")
    public static let patch = HTTPMethod("PATCH")

    public var description: String { rawValue }
}

// MARK: - Headers

/// An ordered list of header fields with case-insensitive lookup by name.
public struct HTTPHeaders: Sendable, Sequence {
    public typealias Element = (name: String, value: String)
    private var fields: [Element]

    public init(_ fields: [Element] = []) { self.fields = fields }

    /// The first value of `name`, compared case-insensitively.
    public subscript(name: String) -> String? {
        get { fields.first(where: { asciiCaseInsensitiveEquals($0.name, name) })?.value }
        set {
            fields.removeAll(where: { asciiCaseInsensitiveEquals($0.name, name) })
            if let newValue { fields.append((name, newValue)) }
        }
    }

    /// Every value of `name`, in order.
    public func values(_ name: String) -> [String] {
        fields.filter { asciiCaseInsensitiveEquals($0.name, name) }.map(\.value)
    }

    /// Adds a field without replacing others of the same name.
    public mutating func add(_ name: String, _ value: String) { fields.append((name, value)) }

    public func contains(_ name: String) -> Bool { self[name] != nil }

    public var count: Int { fields.count }

    public func makeIterator() -> IndexingIterator<[Element]> { fields.makeIterator() }
}

/// ASCII case-insensitive equality, as header names and tokens compare.
func asciiCaseInsensitiveEquals(_ a: String, _ b: String) -> Bool {
    let a = a.utf8, b = b.utf8
    guard a.count == b.count else { return false }
    for (x, y) in zip(a, b) where x != y {
        guard (x | 0x20) == (y | 0x20), (x | 0x20) >= 0x61, (x | 0x20) <= 0x7A else { return false }
    }
    return true
}

// MARK: - Request

/// One HTTP request, copied off the event loop into plain values a handler may keep.
public struct HTTPRequest: Sendable {
    public var method: HTTPMethod
    /// The path as sent, before percent-decoding (`/api/tasks/1`).
    public var path: String
    /// The query string's parameters, split and percent-decoded, in order.
    public var query: QueryParameters
    public var headers: HTTPHeaders
    public var body: [UInt8]
    /// The id this request is logged and answered under (`X-Request-ID`).
    public var requestID: String
    /// The matched route template (`/api/tasks/:id`), once routing has happened.
    public var route: String?
    /// Path parameters of the matched route, percent-decoded.
    public var parameters = PathParameters()
    /// For an OPTIONS request to a known path: the methods routed there (else empty).
    public internal(set) var routeMethods: [HTTPMethod] = []
    /// When the request was read in full (the start of its handling time).
    public var receivedAt: ContinuousClock.Instant
    /// The route `Router.respondImmediately` left for `respond(to:)` to await.
    var awaitedRoute: Int?

    public init(
        method: HTTPMethod, path: String, query: QueryParameters = QueryParameters(""),
        headers: HTTPHeaders = HTTPHeaders(), body: [UInt8] = [], requestID: String = ""
    ) {
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.requestID = requestID
        receivedAt = .now
    }
}

/// A matched route's path parameters by name (a route has few: a list, no hashing).
public struct PathParameters: Sendable {
    private var pairs: [(name: String, value: String)] = []

    public init() {}

    public subscript(name: String) -> String? {
        get { pairs.first(where: { $0.name == name })?.value }
        set {
            pairs.removeAll(where: { $0.name == name })
            if let newValue { pairs.append((name, newValue)) }
        }
    }
}

/// Query parameters split on `&` and `=`, with `+` and percent escapes decoded.
public struct QueryParameters: Sendable {
    public let pairs: [(name: String, value: String)]

    public init(_ rawQuery: Substring) {
        pairs = rawQuery.split(separator: "&", omittingEmptySubsequences: true).map { part in
            let pieces = part.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = percentDecode(pieces[0], plusAsSpace: true) ?? String(pieces[0])
            let value = pieces.count > 1 ? (percentDecode(pieces[1], plusAsSpace: true) ?? String(pieces[1])) : ""
            return (name, value)
        }
    }

    /// The first value for `name`.
    public subscript(name: String) -> String? { pairs.first(where: { $0.name == name })?.value }
}

/// Decodes `%XX` escapes (and `+` as space when asked); nil when an escape is malformed or
/// the result is not UTF-8.
public func percentDecode(_ text: Substring, plusAsSpace: Bool = false) -> String? {
    let utf8 = text.utf8
    if !utf8.contains(UInt8(ascii: "%")) && !(plusAsSpace && utf8.contains(UInt8(ascii: "+"))) {
        return String(text)
    }
    var bytes: [UInt8] = []
    bytes.reserveCapacity(utf8.count)
    var index = utf8.startIndex
    while index != utf8.endIndex {
        let byte = utf8[index]
        if byte == UInt8(ascii: "%") {
            let first = utf8.index(after: index)
            guard first != utf8.endIndex else { return nil }
            let second = utf8.index(after: first)
            guard second != utf8.endIndex, let high = hexValue(utf8[first]), let low = hexValue(utf8[second]) else {
                return nil
            }
            bytes.append(high << 4 | low)
            index = utf8.index(after: second)
        } else {
            bytes.append(plusAsSpace && byte == UInt8(ascii: "+") ? UInt8(ascii: " ") : byte)
            index = utf8.index(after: index)
        }
    }
    return String(validating: bytes, as: UTF8.self)
}

func hexValue(_ byte: UInt8) -> UInt8? {
    switch byte {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
    default: return nil
    }
}

// MARK: - Response

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
}

/// The reason phrase for a status code.
func reasonPhrase(_ status: Int) -> String {
    switch status {
    case 100: "Continue"
    case 200: "OK"
    case 201: "Created"
    case 204: "No Content"
    case 400: "Bad Request"
    case 404: "Not Found"
    case 405: "Method Not Allowed"
    case 408: "Request Timeout"
    case 411: "Length Required"
    case 413: "Content Too Large"
    case 415: "Unsupported Media Type"
    case 422: "Unprocessable Content"
    case 431: "Request Header Fields Too Large"
    case 500: "Internal Server Error"
    case 501: "Not Implemented"
    case 503: "Service Unavailable"
    case 505: "HTTP Version Not Supported"
    default: "Status \(status)"
    }
}

// MARK: - Handlers

/// Anything that turns a request into a response: the one link from Server to the application.
public protocol HTTPResponder: Sendable {
    /// The answer when it can be given without suspending; else nil, and the server passes the
    /// request as this left it to `respond(to:)` in a task. Called on the event loop: it must
    /// not block.
    func respondImmediately(to request: inout HTTPRequest) -> HTTPResponse?
    func respond(to request: HTTPRequest) async -> HTTPResponse
}

extension HTTPResponder {
    public func respondImmediately(to request: inout HTTPRequest) -> HTTPResponse? { nil }
}

/// A step around the handlers, in synchronous parts (so a request that needs no `await` needs
/// no task): a look before the handler, errors turned into answers, a look at the answer.
public protocol HTTPMiddleware: Sendable {
    /// Runs before the handler, outermost first; an answer returned here is the request's (the
    /// handler and inner middleware are skipped).
    func willHandle(_ request: HTTPRequest) -> HTTPResponse?
    /// The answer for an error the handler threw, or nil to leave it to outer middleware.
    func response(for error: any Error, to request: HTTPRequest) -> HTTPResponse?
    /// Runs once the answer is known, innermost first; may change it.
    func didHandle(_ request: HTTPRequest, response: inout HTTPResponse)
}

extension HTTPMiddleware {
    public func willHandle(_ request: HTTPRequest) -> HTTPResponse? { nil }
    public func response(for error: any Error, to request: HTTPRequest) -> HTTPResponse? { nil }
    public func didHandle(_ request: HTTPRequest, response: inout HTTPResponse) {}
}

/// An error that already knows its HTTP answer; the router sends it as is.
public struct HTTPError: Error, Sendable {
    public var response: HTTPResponse
    public init(_ status: Int, _ message: String, headers: [(String, String)] = []) {
        var response = HTTPResponse.error(status, message)
        for (name, value) in headers { response.headers[name] = value }
        self.response = response
    }
}
