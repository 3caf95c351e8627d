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
        case body(RequestHead, BodyFraming, headLength: Int, continueSent: Bool)
    }

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
        if case .body = state { return true }
        return !buffer.isEmpty
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
                framing = try bodyFraming(head.headers)
            } catch let error as RequestParseError {
                return .failure(error)
            } catch {
                return .failure(RequestParseError(status: 400, message: "Bad request"))
            }
            if case .length(let length) = framing, length > maxBodyBytes {
                return .failure(RequestParseError(status: 413, message: "Request body too large"))
            }
            state = .body(head, framing, headLength: headLength, continueSent: false)
        }
        guard case .body(let head, let framing, let headLength, let continueSent) = state else {
            preconditionFailure("parser state must be .body here")
        }
        switch framing {
        case .length(let length):
            guard buffer.count - headLength >= length else {
                return incomplete(head, framing, headLength, continueSent)
            }
            let body = Array(buffer[headLength..<headLength + length])
            buffer.removeSubrange(0..<headLength + length)
            reset()
            return .request(head, body: body)
        case .chunked:
            switch decodeChunked(buffer, from: headLength, limit: maxBodyBytes) {
            case .incomplete:
                return incomplete(head, framing, headLength, continueSent)
            case .invalid:
                return .failure(RequestParseError(status: 400, message: "Malformed chunked body"))
            case .tooLarge:
                return .failure(RequestParseError(status: 413, message: "Request body too large"))
            case .complete(let body, let end):
                buffer.removeSubrange(0..<end)
                reset()
                return .request(head, body: body)
            }
        }
    }

    private mutating func incomplete(_ head: RequestHead, _ framing: BodyFraming, _ headLength: Int, _ continueSent: Bool) -> Result {
        if head.expectsContinue && !continueSent {
            state = .body(head, framing, headLength: headLength, continueSent: true)
            return .incomplete(sendContinue: true)
        }
        return .incomplete(sendContinue: false)
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
                guard value.allSatisfy({ $0 >= 0x20 && $0 != 0x7F || $0 == 0x09 }) else { throw bad("Malformed header value") }
                let field = (name: String(decoding: name, as: UTF8.self), value: String(decoding: value, as: UTF8.self))
                if asciiCaseInsensitiveEquals(field.name, "Connection") {
                    for token in field.value.split(separator: ",") {
                        let token = token.trimmingASCIISpaces()
                        if asciiCaseInsensitiveEquals(token, "close") { connectionClose = true }
                        if asciiCaseInsensitiveEquals(token, "keep-alive") { connectionKeepAlive = true }
                    }
                } else if asciiCaseInsensitiveEquals(field.name, "Expect"), asciiCaseInsensitiveEquals(field.value, "100-continue") {
                    expectsContinue = true
                }
                fields.append(field)
            }
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

    private func bodyFraming(_ headers: HTTPHeaders) throws -> BodyFraming {
        let transferEncodings = headers.values("Transfer-Encoding")
        let lengths = headers.values("Content-Length")
        if !transferEncodings.isEmpty {
            guard lengths.isEmpty else { throw bad("Both Content-Length and Transfer-Encoding") }
            let codings = transferEncodings.flatMap { $0.split(separator: ",") }.map { $0.trimmingASCIISpaces().lowercased() }
            guard codings == ["chunked"] else {
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

// MARK: - Chunked bodies

enum ChunkedDecodeResult: Equatable {
    case incomplete
    case invalid
    case tooLarge
    case complete(body: [UInt8], end: Int)
}

/// Decodes a chunked body that starts at `start`, without trailers kept; `end` is the offset just
/// past the final blank line.
func decodeChunked(_ buffer: [UInt8], from start: Int, limit: Int) -> ChunkedDecodeResult {
    var body: [UInt8] = []
    var index = start
    func readLine() -> ArraySlice<UInt8>?? {
        guard let newline = buffer[index...].firstIndex(of: UInt8(ascii: "\n")) else {
            return buffer.count - index > 4096 ? .some(nil) : nil
        }
        var line = buffer[index..<newline]
        if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
        index = newline + 1
        return .some(line)
    }
    while true {
        guard let maybeLine = readLine() else { return .incomplete }
        guard let line = maybeLine else { return .invalid }
        let sizeText = line.prefix(while: { $0 != UInt8(ascii: ";") }).drop(while: { $0 == 0x20 })
        guard !sizeText.isEmpty, sizeText.count <= 8 else { return sizeText.isEmpty ? .invalid : .tooLarge }
        var size = 0
        for byte in sizeText {
            if byte == 0x20 || byte == 0x09 { break }
            guard let digit = hexValue(byte) else { return .invalid }
            size = size << 4 | Int(digit)
        }
        if size == 0 {
            while true {
                guard let maybeTrailer = readLine() else { return .incomplete }
                guard let trailer = maybeTrailer else { return .invalid }
                if trailer.isEmpty { return .complete(body: body, end: index) }
            }
        }
        guard body.count + size <= limit else { return .tooLarge }
        guard buffer.count - index >= size + 1 else { return .incomplete }
        body.append(contentsOf: buffer[index..<index + size])
        index += size
        if buffer[index] == UInt8(ascii: "\r") {
            guard buffer.count - index >= 2 else { return .incomplete }
            guard buffer[index + 1] == UInt8(ascii: "\n") else { return .invalid }
            index += 2
        } else if buffer[index] == UInt8(ascii: "\n") {
            index += 1
        } else {
            return .invalid
        }
    }
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

extension StringProtocol {
    /// The text without leading and trailing spaces and tabs.
    func trimmingASCIISpaces() -> String {
        let bytes = Array(self.utf8)
        guard let first = bytes.firstIndex(where: { $0 != 0x20 && $0 != 0x09 }),
              let last = bytes.lastIndex(where: { $0 != 0x20 && $0 != 0x09 })
        else { return "" }
        return String(decoding: bytes[first...last], as: UTF8.self)
    }
}
