/// Writes a response's status line, headers and body as HTTP/1.1 bytes.
enum ResponseSerializer {
    /// The bytes of `response`: a `Content-Length` (except where the status forbids a body), the
    /// request id unless the response sets one, the connection header the version needs, and
    /// `dateLine` (a whole `Date` header line, from `HTTPDateHeader`).
    static func bytes(
        of response: HTTPResponse, keepAlive: Bool, http10: Bool, omitBody: Bool, requestID: String?, dateLine: [UInt8],
        framing: BodyFraming = .whole
    ) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(160 + response.body.count)
        out.append(contentsOf: "HTTP/1.1 ".utf8)
        out.append(contentsOf: String(response.status).utf8)
        out.append(UInt8(ascii: " "))
        out.append(contentsOf: reasonPhrase(response.status).utf8)
        out.append(contentsOf: crlf)
        out.append(contentsOf: dateLine)
        for (name, value) in response.headers {
            appendHeader(name, value, to: &out)
        }
        let mayHaveBody = mayHaveBody(response.status)
        if mayHaveBody {
            switch framing {
            case .whole: appendHeader("Content-Length", String(response.body.count), to: &out)
            case .chunked: appendHeader("Transfer-Encoding", "chunked", to: &out)
            case .untilClose: break
            }
        }
        if let requestID, !response.headers.contains("X-Request-ID") {
            appendHeader("X-Request-ID", requestID, to: &out)
        }
        if !keepAlive {
            appendHeader("Connection", "close", to: &out)
        } else if http10 {
            appendHeader("Connection", "keep-alive", to: &out)
        }
        out.append(contentsOf: crlf)
        if !omitBody && mayHaveBody && framing == .whole { out.append(contentsOf: response.body) }
        return out
    }

    /// How the body's end is marked: its length, chunks (a streamed body), or the connection
    /// closing (a streamed body to an HTTP/1.0 client).
    enum BodyFraming: Equatable {
        case whole, chunked, untilClose
    }

    /// Whether an answer with `status` carries a body at all.
    static func mayHaveBody(_ status: Int) -> Bool {
        status != 204 && status != 304 && status >= 200
    }

    /// The interim answer to `Expect: 100-continue`.
    static let continueLine: [UInt8] = Array("HTTP/1.1 100 Continue\r\n\r\n".utf8)

    private static let crlf: [UInt8] = [0x0D, 0x0A]

    /// Appends `name: value` and CRLF.
    private static func appendHeader(_ name: String, _ value: String, to out: inout [UInt8]) {
        out.append(contentsOf: name.utf8)
        out.append(contentsOf: [UInt8(ascii: ":"), UInt8(ascii: " ")])
        out.append(contentsOf: value.utf8)
        out.append(contentsOf: crlf)
    }
}

/// The reason phrase for a status code.
func reasonPhrase(_ status: Int) -> String {
    switch status {
    case 100: "Continue"
    case 200: "OK"
    case 201: "Created"
    case 204: "No Content"
    case 304: "Not Modified"
    case 400: "Bad Request"
    case 404: "Not Found"
    case 405: "Method Not Allowed"
    case 408: "Request Timeout"
    case 409: "Conflict"
    case 411: "Length Required"
    case 412: "Precondition Failed"
    case 413: "Content Too Large"
    case 415: "Unsupported Media Type"
    case 422: "Unprocessable Content"
    case 428: "Precondition Required"
    case 431: "Request Header Fields Too Large"
    case 500: "Internal Server Error"
    case 501: "Not Implemented"
    case 503: "Service Unavailable"
    case 505: "HTTP Version Not Supported"
    default: "Status \(status)"
    }
}
