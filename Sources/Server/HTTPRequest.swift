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

    public var description: String { rawValue }
}

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
    private let pairs: [(name: String, value: String)]

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

