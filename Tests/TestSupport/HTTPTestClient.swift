import Foundation

/// An HTTP response as read off a socket by the test client.
public struct TestResponse: Sendable {
    public let status: Int
    public let headers: [(name: String, value: String)]
    public let body: [UInt8]

    public func header(_ name: String) -> String? {
        headers.first(where: { $0.name.lowercased() == name.lowercased() })?.value
    }

    public var text: String { String(decoding: body, as: UTF8.self) }

    /// The body parsed with Foundation's JSONSerialization.
    public func json() throws -> Any { try JSONSerialization.jsonObject(with: Data(body), options: [.fragmentsAllowed]) }

    public func jsonObject() throws -> [String: Any] {
        guard let object = try json() as? [String: Any] else { throw TestClientError("body is not a JSON object: \(text)") }
        return object
    }

    public func jsonArray() throws -> [[String: Any]] {
        guard let array = try json() as? [[String: Any]] else { throw TestClientError("body is not a JSON array: \(text)") }
        return array
    }
}

public struct TestClientError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A blocking TCP connection for tests, speaking raw HTTP/1.1. Its blocking calls run on
/// threads of their own (through `offCooperativePool`), never on Swift's cooperative threads.
public final class RawConnection: @unchecked Sendable {  // used by one test task at a time; the fd is only touched by the call in progress
    private var fd: Int32
    private var buffer: [UInt8] = []

    /// `receiveBuffer` shrinks the kernel's receive buffer (a client that reads slowly fills it).
    public init(port: Int, timeout: TimeInterval = 10, receiveBuffer: Int32? = nil) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestClientError("socket failed") }
        if var size = receiveBuffer {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else {
            Glibc.close(fd)
            throw TestClientError("connect to port \(port) failed: errno \(errno)")
        }
    }

    deinit { if fd >= 0 { Glibc.close(fd) } }

    /// Closes the socket now (the server sees the client gone).
    public func close() {
        guard fd >= 0 else { return }
        Glibc.close(fd)
        fd = -1
    }

    public func send(_ text: String) throws { try send(Array(text.utf8)) }

    public func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard sent > 0 else { throw TestClientError("send failed: errno \(errno)") }
            offset += sent
        }
    }

    /// Shuts the sending side (the server sees EOF).
    public func shutdownWrite() { shutdown(fd, Int32(SHUT_WR)) }

    /// Reads one response; `headOnly` for answers to HEAD (no body despite Content-Length).
    public func readResponse(headOnly: Bool = false) throws -> TestResponse {
        while true {
            if let end = headEnd() {
                let (status, headers) = try Self.parseHead(buffer[0..<end])
                if status == 100 {
                    buffer.removeFirst(end + 4)
                    continue
                }
                let chunked = headers.contains { $0.0.lowercased() == "transfer-encoding" && $0.1.lowercased() == "chunked" }
                if chunked && !headOnly {
                    buffer.removeFirst(end + 4)
                    return TestResponse(status: status, headers: headers, body: try readChunks())
                }
                let length = headOnly || status == 204 || status == 304
                    ? 0 : Int(headers.first(where: { $0.0.lowercased() == "content-length" })?.1 ?? "0") ?? 0
                while buffer.count < end + 4 + length { try fill() }
                let body = Array(buffer[(end + 4)..<(end + 4 + length)])
                buffer.removeFirst(end + 4 + length)
                return TestResponse(status: status, headers: headers, body: body)
            }
            try fill()
        }
    }

    /// A response head's status and headers.
    private static func parseHead(_ bytes: ArraySlice<UInt8>) throws -> (status: Int, headers: [(String, String)]) {
        let head = String(decoding: bytes, as: UTF8.self)
        var lines = head.components(separatedBy: "\r\n").filter { !$0.isEmpty }
        let statusLine = lines.removeFirst().split(separator: " ")
        guard statusLine.count >= 2, let status = Int(statusLine[1]) else { throw TestClientError("bad status line: \(head)") }
        let headers = lines.map { line -> (String, String) in
            let parts = line.split(separator: ":", maxSplits: 1)
            return (String(parts[0]), parts.count > 1 ? parts[1].trimmingCharacters(in: .whitespaces) : "")
        }
        return (status, headers)
    }

    /// Reads a response's head only (for a body read as it comes: `readChunk`): its status and
    /// headers.
    public func readHead() throws -> (status: Int, headers: [(String, String)]) {
        while true {
            if let end = headEnd() {
                let head = try Self.parseHead(buffer[0..<end])
                buffer.removeFirst(end + 4)
                return head
            }
            try fill()
        }
    }

    /// The next chunk of a chunked body whose head `readHead` read; nil after the last chunk.
    public func readChunk() throws -> [UInt8]? {
        func line() throws -> String {
            while true {
                if let end = buffer.firstIndex(of: 10), end > 0, buffer[end - 1] == 13 {
                    let text = String(decoding: buffer[0..<(end - 1)], as: UTF8.self)
                    buffer.removeFirst(end + 1)
                    return text
                }
                try fill()
            }
        }
        let sizeLine = try line()
        guard let size = Int(sizeLine, radix: 16) else { throw TestClientError("bad chunk size line: \(sizeLine)") }
        if size == 0 {
            _ = try line()
            return nil
        }
        while buffer.count < size + 2 { try fill() }
        let chunk = Array(buffer[0..<size])
        buffer.removeFirst(size + 2)
        return chunk
    }

    /// A chunked body (RFC 9112 §7.1), strictly: hex sizes without extensions, CRLF after each
    /// chunk, the last chunk and no trailers. Throws when it is cut short or malformed.
    private func readChunks() throws -> [UInt8] {
        var body: [UInt8] = []
        var offset = 0
        func line() throws -> String {
            while true {
                if let end = buffer[offset...].firstIndex(of: 10), end > offset, buffer[end - 1] == 13 {
                    let text = String(decoding: buffer[offset..<(end - 1)], as: UTF8.self)
                    offset = end + 1
                    return text
                }
                try fill()
            }
        }
        while true {
            let sizeLine = try line()
            guard let size = Int(sizeLine, radix: 16), size >= 0 else { throw TestClientError("bad chunk size line: \(sizeLine)") }
            if size == 0 {
                guard try line().isEmpty else { throw TestClientError("trailers after the last chunk") }
                buffer.removeFirst(offset)
                return body
            }
            while buffer.count < offset + size + 2 { try fill() }
            body.append(contentsOf: buffer[offset..<(offset + size)])
            guard buffer[offset + size] == 13, buffer[offset + size + 1] == 10 else { throw TestClientError("no CRLF after a chunk") }
            offset += size + 2
            if offset > 1 << 20 {
                buffer.removeFirst(offset)
                offset = 0
            }
        }
    }

    /// The bytes that arrive until the server closes the connection (a body without a length);
    /// throws when the connection is reset instead.
    public func readBodyUntilClose() throws -> [UInt8] {
        var body = buffer
        buffer.removeAll()
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count == 0 { return body }
            if count < 0 { throw TestClientError("recv failed: errno \(errno)") }
            body.append(contentsOf: chunk[0..<count])
        }
    }

    /// Reads until the server closes the connection (or resets it); the bytes received.
    public func readToEnd() -> Int {
        var total = buffer.count
        buffer.removeAll()
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count <= 0 { return total }
            total += count
        }
    }

    /// Reads `chunk` bytes at most every `interval` until the server closes the connection or
    /// `limit` passes: the bytes received, and whether the server closed it.
    public func readSlowly(chunk: Int, every interval: Duration, for limit: Duration) -> (bytes: Int, closed: Bool) {
        var total = 0
        var piece = [UInt8](repeating: 0, count: chunk)
        let started = ContinuousClock.now
        while ContinuousClock.now - started < limit {
            let count = piece.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count <= 0 { return (total, true) }
            total += count
            let (seconds, attoseconds) = interval.components
            usleep(UInt32(seconds * 1_000_000 + attoseconds / 1_000_000_000_000))
        }
        return (total, false)
    }

    /// True when the server has closed the connection (EOF with nothing buffered).
    public func isClosedByPeer() -> Bool {
        guard buffer.isEmpty else { return false }
        do { try fill() } catch { return true }
        return false
    }

    private func headEnd() -> Int? {
        guard buffer.count >= 4 else { return nil }
        for index in 0...(buffer.count - 4)
        where buffer[index] == 13 && buffer[index + 1] == 10 && buffer[index + 2] == 13 && buffer[index + 3] == 10 {
            return index
        }
        return nil
    }

    private func fill() throws {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if count == 0 { throw TestClientError("connection closed by server") }
        if count < 0 { throw TestClientError("recv failed: errno \(errno)") }
        buffer.append(contentsOf: chunk[0..<count])
    }
}

/// Runs blocking work on a thread of its own and awaits it (Dispatch's pool is too narrow for
/// hundreds of blocked sockets, and Swift's cooperative pool must never block).
public func offCooperativePool<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            continuation.resume(with: Result { try work() })
        }
        thread.stackSize = 512 * 1024
        thread.start()
    }
}

/// One request on a new connection.
public func httpRequest(
    port: Int, _ method: String, _ path: String, headers: [(String, String)] = [], body: [UInt8]? = nil
) async throws -> TestResponse {
    try await offCooperativePool {
        let connection = try RawConnection(port: port)
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        if let body { head += "Content-Length: \(body.count)\r\n" }
        head += "\r\n"
        try connection.send(Array(head.utf8) + (body ?? []))
        return try connection.readResponse(headOnly: method == "HEAD")
    }
}

/// One JSON request on a new connection.
public func httpJSON(port: Int, _ method: String, _ path: String, _ json: String) async throws -> TestResponse {
    try await httpRequest(port: port, method, path, headers: [("Content-Type", "application/json")], body: Array(json.utf8))
}

/// A client of a server-sent event stream (`text/event-stream`, chunked), for the tests.
public final class EventStreamClient: @unchecked Sendable {  // used by one test task at a time, like its RawConnection
    /// One event as the stream gave it; `comment` for a line starting with `:`.
    public struct Event: Sendable, Equatable {
        public var id: String?
        public var name: String?
        public var data: String?
        public var retry: String?
        public var comment: String?
    }

    public let connection: RawConnection
    public let status: Int
    public let headers: [(String, String)]
    private var text = ""

    /// Opens `path` (with `headers`); `timeout` bounds each read.
    public init(port: Int, path: String = "/api/events", headers: [(String, String)] = [], timeout: TimeInterval = 10) throws {
        connection = try RawConnection(port: port, timeout: timeout)
        var head = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        try connection.send(head + "\r\n")
        let answer = try connection.readHead()
        status = answer.status
        self.headers = answer.headers
    }

    public func header(_ name: String) -> String? {
        headers.first { $0.0.lowercased() == name.lowercased() }?.1
    }

    /// The next event or comment block; nil when the stream ended. Throws on a read timeout.
    public func next() throws -> Event? {
        while true {
            if let range = text.range(of: "\n\n") {
                let block = text[..<range.lowerBound]
                text.removeSubrange(..<range.upperBound)
                var event = Event()
                for line in block.split(separator: "\n", omittingEmptySubsequences: false) {
                    if line.hasPrefix(":") { event.comment = String(line.dropFirst()).trimmingCharacters(in: .whitespaces); continue }
                    let parts = line.split(separator: ":", maxSplits: 1)
                    let value = parts.count > 1 ? String(parts[1].drop { $0 == " " }) : ""
                    switch parts.first.map(String.init) {
                    case "id": event.id = value
                    case "event": event.name = value
                    case "data": event.data = value
                    case "retry": event.retry = value
                    default: break
                    }
                }
                return event
            }
            guard let chunk = try connection.readChunk() else { return nil }
            text += String(decoding: chunk, as: UTF8.self)
        }
    }

    /// The next event with a name (comments and bare `retry:` blocks skipped).
    public func nextNamed() throws -> Event? {
        while let event = try next() {
            if event.name != nil { return event }
        }
        return nil
    }
}
