/// The request head as parsed from the wire, before the body is complete.
struct RequestHead: Sendable {
    var method: HTTPMethod
    var target: String
    var minorVersion: Int
    var headers: HTTPHeaders
    var keepAlive: Bool
    var expectsContinue: Bool
}

/// How a request's body is delimited.
enum BodyFraming: Equatable {
    case length(Int)
    case chunked
}

/// A request the parser could not accept: the status to answer with, and then close.
struct RequestParseError: Error, Equatable {
    var status: Int
    var message: String
}

/// Incremental HTTP/1.x request parser over a connection's input buffer. Pure: bytes in,
/// one complete request (or a reason to refuse) out, with the configured limits enforced before
/// anything beyond them is buffered.
struct RequestParser {
    enum Result {
        /// More bytes are needed; `sendContinue` asks for a `100 Continue` to be written once.
        case incomplete(sendContinue: Bool)
        case request(RequestHead, body: [UInt8])
        case failure(RequestParseError)
    }

    private enum State {
        case head
        /// A `Content-Length` body: its bytes stay in the buffer behind the head until all are in.
        case body(RequestHead, BodyFraming, headLength: Int, continueSent: Bool)
        /// A chunked body: the head is consumed, the decoder takes the body as it arrives.
        case chunked(RequestHead, ChunkedBodyDecoder, continueSent: Bool)
    }

    /// Longest method accepted (longer than any this server implements: 501, RFC 9110 §9.1).
    static let maxMethodBytes = 16

    let maxHeaderBytes: Int
    let maxBodyBytes: Int
    private var state: State = .head
    /// Where the next search for the end of the head starts (nothing before it is a blank line).
    private var scanOffset = 0

    init(maxHeaderBytes: Int, maxBodyBytes: Int) {
        self.maxHeaderBytes = maxHeaderBytes
        self.maxBodyBytes = maxBodyBytes
    }

    /// True when some bytes of a request that is not yet complete have arrived.
    func isMidRequest(_ buffer: [UInt8]) -> Bool {
        if case .head = state { return !buffer.isEmpty }
        return true
    }

    /// Parses from the start of `buffer`; a complete request's bytes are removed from it.
    mutating func parse(_ buffer: inout [UInt8]) -> Result {
        if case .head = state {
            guard let headLength = findHeadEnd(buffer) else {
                if buffer.count > maxHeaderBytes {
                    return .failure(RequestParseError(status: 431, message: "Request header fields too large"))
                }
                return .incomplete(sendContinue: false)
            }
            if headLength > maxHeaderBytes {
                return .failure(RequestParseError(status: 431, message: "Request header fields too large"))
            }
            let head: RequestHead
            let framing: BodyFraming
            do {
                head = try parseHead(buffer[0..<headLength])
                framing = try bodyFraming(head)
            } catch let error as RequestParseError {
                return .failure(error)
            } catch {
                return .failure(RequestParseError(status: 400, message: "Bad request"))
            }
            switch framing {
            case .length(let length):
                if length > maxBodyBytes {
                    return .failure(RequestParseError(status: 413, message: "Request body too large"))
                }
                state = .body(head, framing, headLength: headLength, continueSent: false)
            case .chunked:
                buffer.removeSubrange(0..<headLength)
                let decoder = ChunkedBodyDecoder(maxBodyBytes: maxBodyBytes, maxTrailerBytes: maxHeaderBytes - headLength)
                state = .chunked(head, decoder, continueSent: false)
            }
        }
        switch state {
        case .head:
            return .incomplete(sendContinue: false)
        case .body(let head, let framing, let headLength, let continueSent):
            guard case .length(let length) = framing, buffer.count - headLength >= length else {
                return incomplete(head, continueSent)
            }
            let body = Array(buffer[headLength..<headLength + length])
            buffer.removeSubrange(0..<headLength + length)
            reset()
            return .request(head, body: body)
        case .chunked(let head, var decoder, let continueSent):
            state = .head  // the decoder is moved out while it runs (no copy of its body)
            let (consumed, outcome) = buffer.withUnsafeBufferPointer { decoder.consume($0) }
            buffer.removeSubrange(0..<consumed)
            switch outcome {
            case .needMore:
                state = .chunked(head, decoder, continueSent: continueSent)
                return incomplete(head, continueSent)
            case .failure(let error):
                return .failure(error)
            case .complete:
                reset()
                return .request(head, body: decoder.takeBody())
            }
        }
    }

    /// Asks for `100 Continue` once, the first time a request that expects it waits for its body.
    private mutating func incomplete(_ head: RequestHead, _ continueSent: Bool) -> Result {
        guard head.expectsContinue && !continueSent else { return .incomplete(sendContinue: false) }
        switch state {
        case .body(let head, let framing, let headLength, _):
            state = .body(head, framing, headLength: headLength, continueSent: true)
        case .chunked(let head, let decoder, _):
            state = .chunked(head, decoder, continueSent: true)
        case .head:
            break
        }
        return .incomplete(sendContinue: true)
    }

    private mutating func reset() {
        state = .head
        scanOffset = 0
    }

    // MARK: Head

    /// The length of the head including its blank line, accepting CRLF or bare LF line ends.
    private mutating func findHeadEnd(_ buffer: [UInt8]) -> Int? {
        let limit = min(buffer.count, maxHeaderBytes + 4)
        var index = scanOffset
        // Leading empty lines before a request line are ignored (RFC 9112 §2.2).
        while index < limit {
            if buffer[index] == UInt8(ascii: "\n") {
                if index >= 1, buffer[index - 1] == UInt8(ascii: "\n") { return index + 1 }
                if index >= 2, buffer[index - 1] == UInt8(ascii: "\r"), buffer[index - 2] == UInt8(ascii: "\n") {
                    return index + 1
                }
            }
            index += 1
        }
        scanOffset = max(0, limit - 2)
        return nil
    }

    /// Parses the request line and header fields in one pass over the bytes (no array of lines,
    /// no copies but the strings the request keeps).
    private func parseHead(_ bytes: ArraySlice<UInt8>) throws -> RequestHead {
        try bytes.withUnsafeBufferPointer { buffer in
            var lines = LineScanner(buffer)
            var requestLine = lines.next()
            // Leading empty lines before the request line are ignored (RFC 9112 §2.2).
            while let line = requestLine, line.isEmpty { requestLine = lines.next() }
            guard let requestLine else { throw bad("Empty request") }
            let (method, target, minor) = try parseRequestLine(requestLine)

            var fields: [HTTPHeaders.Element] = []
            fields.reserveCapacity(8)
            var connectionClose = false
            var connectionKeepAlive = false
            var expectsContinue = false
            var hostFields = 0
            while let line = lines.next() {
                if line.isEmpty { continue }
                guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { throw bad("Malformed header line") }
                let name = UnsafeBufferPointer(rebasing: line[..<colon])
                guard !name.isEmpty, name.allSatisfy(isTokenByte) else { throw bad("Malformed header name") }
                var valueStart = colon + 1
                var valueEnd = line.endIndex
                while valueStart < valueEnd, line[valueStart] == 0x20 || line[valueStart] == 0x09 { valueStart += 1 }
                while valueEnd > valueStart, line[valueEnd - 1] == 0x20 || line[valueEnd - 1] == 0x09 { valueEnd -= 1 }
                let value = UnsafeBufferPointer(rebasing: line[valueStart..<valueEnd])
                guard value.allSatisfy(isFieldValueByte) else { throw bad("Malformed header value") }
                let field = (name: String(decoding: name, as: UTF8.self), value: String(decoding: value, as: UTF8.self))
                if asciiCaseInsensitiveEquals(field.name, "Connection") {
                    for token in field.value.split(separator: ",") {
                        let token = token.trimmingASCIISpaces()
                        if asciiCaseInsensitiveEquals(token, "close") { connectionClose = true }
                        if asciiCaseInsensitiveEquals(token, "keep-alive") { connectionKeepAlive = true }
                    }
                } else if asciiCaseInsensitiveEquals(field.name, "Expect"), asciiCaseInsensitiveEquals(field.value, "100-continue") {
                    expectsContinue = true
                } else if asciiCaseInsensitiveEquals(field.name, "Host") {
                    guard value.allSatisfy(isHostByte) else { throw bad("Invalid Host header") }
                    hostFields += 1
                }
                fields.append(field)
            }
            // RFC 9112 §3.2: an HTTP/1.1 request has exactly one Host; no request has two.
            if hostFields > 1 || (minor == 1 && hostFields == 0) { throw bad("Exactly one Host header is required") }
            return RequestHead(
                method: method, target: target, minorVersion: minor, headers: HTTPHeaders(fields),
                keepAlive: minor == 1 ? !connectionClose : connectionKeepAlive,
                expectsContinue: expectsContinue && minor == 1
            )
        }
    }

    /// `METHOD SP request-target SP HTTP/1.x`, with exactly one space between the parts.
    private func parseRequestLine(_ line: Slice<UnsafeBufferPointer<UInt8>>) throws -> (HTTPMethod, String, Int) {
        guard let firstSpace = line.firstIndex(of: UInt8(ascii: " ")),
              let secondSpace = line[(firstSpace + 1)...].firstIndex(of: UInt8(ascii: " ")),
              !line[(secondSpace + 1)...].contains(UInt8(ascii: " "))
        else { throw bad("Malformed request line") }
        let method = UnsafeBufferPointer(rebasing: line[..<firstSpace])
        let target = UnsafeBufferPointer(rebasing: line[(firstSpace + 1)..<secondSpace])
        let version = UnsafeBufferPointer(rebasing: line[(secondSpace + 1)...])
        guard !method.isEmpty, method.allSatisfy(isTokenByte), !target.isEmpty else { throw bad("Malformed request line") }
        guard method.count <= Self.maxMethodBytes else {
            throw RequestParseError(status: 501, message: "Method not implemented")
        }
        let minor: Int
        if version.elementsEqual("HTTP/1.1".utf8) {
            minor = 1
        } else if version.elementsEqual("HTTP/1.0".utf8) {
            minor = 0
        } else if version.starts(with: "HTTP/".utf8) {
            throw RequestParseError(status: 505, message: "HTTP version not supported")
        } else {
            throw bad("Malformed request line")
        }
        guard target.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { throw bad("Malformed request target") }
        guard target[0] == UInt8(ascii: "/") || (target.count == 1 && target[0] == UInt8(ascii: "*")) else {
            throw bad("Unsupported request target")
        }
        return (HTTPMethod(String(decoding: method, as: UTF8.self)), String(decoding: target, as: UTF8.self), minor)
    }

    /// RFC 9112 §6: chunked only on HTTP/1.1, as the final (and here only) coding, never with a
    /// `Content-Length`; anything else that leaves the length in doubt is refused.
    private func bodyFraming(_ head: RequestHead) throws -> BodyFraming {
        let headers = head.headers
        let transferEncodings = headers.values("Transfer-Encoding")
        let lengths = headers.values("Content-Length")
        if !transferEncodings.isEmpty {
            guard head.minorVersion == 1 else { throw bad("Transfer-Encoding on HTTP/1.0") }
            guard lengths.isEmpty else { throw bad("Both Content-Length and Transfer-Encoding") }
            let codings = transferEncodings.flatMap { $0.split(separator: ",") }.map { $0.trimmingASCIISpaces().lowercased() }
            guard codings.last == "chunked" else { throw bad("chunked must be the final transfer coding") }
            guard codings.count == 1 else {
                throw RequestParseError(status: 501, message: "Transfer-Encoding not supported")
            }
            return .chunked
        }
        guard !lengths.isEmpty else { return .length(0) }
        let values = lengths.flatMap { $0.split(separator: ",", omittingEmptySubsequences: false) }.map { $0.trimmingASCIISpaces() }
        guard let first = values.first, values.allSatisfy({ $0 == first }),
              !first.isEmpty, first.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 })
        else { throw bad("Invalid Content-Length") }
        guard first.utf8.count <= 15, let length = Int(first) else {
            throw RequestParseError(status: 413, message: "Request body too large")
        }
        return .length(length)
    }

    private func bad(_ message: String) -> RequestParseError { RequestParseError(status: 400, message: message) }
}

// MARK: - Helpers

/// RFC 9110 `tchar`.
func isTokenByte(_ byte: UInt8) -> Bool {
    switch byte {
    case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
        return true
    default:
        return "!#$%&'*+-.^_`|~".utf8.contains(byte)
    }
}

/// A byte of a Host value: `uri-host [ ":" port ]` (reg-name, IP literal, percent escapes).
func isHostByte(_ byte: UInt8) -> Bool {
    switch byte {
    case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
        return true
    default:
        return "-._~!$&'()*+,;=:%[]".utf8.contains(byte)
    }
}

/// The lines of a head, one at a time: split on LF, with a CR before the LF dropped.
private struct LineScanner {
    private let buffer: UnsafeBufferPointer<UInt8>
    private var start = 0

    init(_ buffer: UnsafeBufferPointer<UInt8>) { self.buffer = buffer }

    mutating func next() -> Slice<UnsafeBufferPointer<UInt8>>? {
        guard start < buffer.count else { return nil }
        var end = buffer[start...].firstIndex(of: UInt8(ascii: "\n")) ?? buffer.count
        let nextStart = end + 1
        if end > start, buffer[end - 1] == UInt8(ascii: "\r") { end -= 1 }
        defer { start = nextStart }
        return buffer[start..<end]
    }
}
