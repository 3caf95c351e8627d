import CLibEvent
import EventLoopCore
import Glibc
import Logging

/// One client connection on one event loop: reads requests, hands each to the responder (at
/// once when it can answer without suspending, else as a Swift task), and writes the answers
/// back in order. Requests on one connection are served one
/// at a time, so pipelined requests are answered in the order they came.
///
/// Reading stays enabled for the connection's whole life (no `epoll_ctl` per request): while a
/// request is answered, later bytes wait in libevent's input buffer, whose high-water mark
/// (`maxPendingInputBytes`) stops reading. Answers are written to the socket at once; only what
/// the kernel does not take waits for libevent's write event.
final class HTTPConnection: @unchecked Sendable {  // every mutable property is touched only on `owner.loop`'s thread
    private enum State {
        /// Waiting for (more of) a request.
        case reading
        /// A handler is running; reading is paused.
        case handling
        /// The last answer is queued; close once it is written.
        case closingAfterWrite
        /// Answer written, write side shut; discarding input until the client closes.
        case lingering
        case closed
    }

    private unowned let owner: ServerLoop
    private var context: ServerContext { owner.context }
    private var bufferEvent: OpaquePointer?
    private var input: [UInt8] = []
    private var parser: RequestParser
    private var state: State = .reading
    /// The client shut its sending side while a handler ran; answer, then close.
    private var peerClosedInput = false
    /// The answer is queued but the output buffer is over its high-water mark.
    private var waitingForOutput = false
    /// When the first byte of the request being read arrived (for the whole-request timeout).
    private var requestStartedAt: ContinuousClock.Instant?
    /// `process()` is on the stack (an answer given during `dispatch` must not re-enter it).
    private var processing = false

    init?(owner: ServerLoop, socket: Int32) {
        self.owner = owner
        let configuration = owner.context.configuration
        parser = RequestParser(maxHeaderBytes: configuration.maxHeaderBytes, maxBodyBytes: configuration.maxBodyBytes)
        guard let bev = bufferevent_socket_new(owner.loop.base, socket, Int32(BEV_OPT_CLOSE_ON_FREE.rawValue)) else {
            Glibc.close(socket)
            return nil
        }
        bufferEvent = bev
    }

    /// Registers the callbacks and starts reading.
    func start() {
        guard let bev = bufferEvent else { return }
        let me = Unmanaged.passUnretained(self).toOpaque()
        bufferevent_setcb(bev, { _, context in
            let connection = Unmanaged<HTTPConnection>.fromOpaque(context!).takeUnretainedValue()
            withExtendedLifetime(connection) { connection.onReadable() }
        }, { _, context in
            let connection = Unmanaged<HTTPConnection>.fromOpaque(context!).takeUnretainedValue()
            withExtendedLifetime(connection) { connection.onOutputDrained() }
        }, { _, events, context in
            let connection = Unmanaged<HTTPConnection>.fromOpaque(context!).takeUnretainedValue()
            withExtendedLifetime(connection) { connection.onEvent(events) }
        }, me)
        var timeout = timeval(context.configuration.timeout)
        bufferevent_set_timeouts(bev, &timeout, &timeout)
        bufferevent_setwatermark(bev, Int16(EV_READ), 0, context.configuration.maxPendingInputBytes)
        bufferevent_enable(bev, Int16(EV_READ))
    }

    /// True when no request is being read, handled or answered (safe to close when draining).
    var isIdle: Bool {
        state == .reading && !parser.isMidRequest(input) && !waitingForOutput
    }

    // MARK: Events

    private func onReadable() {
        guard let bev = bufferEvent, let source = bufferevent_get_input(bev) else { return }
        if state == .lingering {
            evbuffer_drain(source, evbuffer_get_length(source))
            return
        }
        // Busy answering (or the client is not reading its answers): the bytes stay in
        // libevent's buffer, bounded by its high-water mark.
        guard state == .reading, !waitingForOutput else { return }
        takeInput()
        process()
    }

    /// Moves what libevent has read into `input` (which lets libevent read again).
    private func takeInput() {
        guard let bev = bufferEvent, let source = bufferevent_get_input(bev) else { return }
        let length = evbuffer_get_length(source)
        guard length > 0, let bytes = evbuffer_pullup(source, -1) else { return }
        if input.isEmpty && requestStartedAt == nil { requestStartedAt = .now }
        input.append(contentsOf: UnsafeBufferPointer(start: bytes, count: length))
        evbuffer_drain(source, length)
    }

    private func onOutputDrained() {
        if let bev = bufferEvent { bufferevent_disable(bev, Int16(EV_WRITE)) }
        switch state {
        case .closingAfterWrite:
            linger()
        case .reading where waitingForOutput:
            waitingForOutput = false
            takeInput()
            process()
        default:
            break
        }
    }

    private func onEvent(_ events: Int16) {
        if events & Int16(BEV_EVENT_EOF) != 0 {
            switch state {
            case .handling:
                // A half-closed client still gets its answer.
                peerClosedInput = true
                return
            case .reading where hasPendingOutput && !parser.isMidRequest(input):
                state = .closingAfterWrite
                return
            default:
                break
            }
        }
        if events & Int16(BEV_EVENT_TIMEOUT) != 0 {
            if events & Int16(BEV_EVENT_READING) != 0, state == .handling || (state == .reading && waitingForOutput),
               let bev = bufferEvent {
                // Nothing to read while the answer is pending is no stall; libevent paused
                // reading on the timeout, so resume it.
                bufferevent_enable(bev, Int16(EV_READ))
                return
            }
            if state == .reading, parser.isMidRequest(input) {
                fail(RequestParseError(status: 408, message: "Request timed out"))
                return
            }
        }
        close()
    }

    private var hasPendingOutput: Bool {
        guard let bev = bufferEvent else { return false }
        return evbuffer_get_length(bufferevent_get_output(bev)) > 0
    }

    // MARK: Requests

    /// Parses what has arrived and starts a handler for each whole request, one at a time. A
    /// handler that answers without suspending answers inside `dispatch`; the loop then goes on
    /// to the next pipelined request (instead of `answer` calling back in, which would nest one
    /// stack frame per pipelined request).
    private func process() {
        guard !processing else { return }
        processing = true
        defer { processing = false }
        while state == .reading, !waitingForOutput {
            if let started = requestStartedAt, parser.isMidRequest(input),
               ContinuousClock.now - started > context.configuration.timeout {
                fail(RequestParseError(status: 408, message: "Request timed out"))
                return
            }
            switch parser.parse(&input) {
            case .incomplete(let sendContinue):
                if sendContinue, let bev = bufferEvent {
                    let line: StaticString = "HTTP/1.1 100 Continue\r\n\r\n"
                    send(UnsafeRawBufferPointer(start: line.utf8Start, count: line.utf8CodeUnitCount), on: bev)
                }
                if input.isEmpty { requestStartedAt = nil }
                return
            case .failure(let error):
                fail(error)
                return
            case .request(let head, let body):
                requestStartedAt = input.isEmpty ? nil : .now
                dispatch(head, body: body)
            }
        }
    }

    private func dispatch(_ head: RequestHead, body: [UInt8]) {
        state = .handling
        let target = head.target
        let queryStart = target.utf8.firstIndex(of: UInt8(ascii: "?"))
        let path = queryStart.map { String(target[..<$0]) } ?? target
        let query = queryStart.map { QueryParameters(target[target.index(after: $0)...]) } ?? QueryParameters("")
        var request = HTTPRequest(
            method: head.method, path: path, query: query, headers: head.headers, body: body,
            requestID: context.requestIDs.id(for: head.headers["X-Request-ID"])
        )
        context.requestStarted()
        if let response = context.responder.respondImmediately(to: &request) {
            finish(response, to: head, requestID: request.requestID)
            return
        }
        let responder = context.responder
        let loop = owner.loop
        // The handler starts at once on this thread and, after any suspension, resumes on this
        // loop (its task executor): none needs a hop to write its answer.
        Task.immediate(executorPreference: loop) { [request] in
            let response = await responder.respond(to: request)
            if loop.isInLoopThread {
                self.finish(response, to: head, requestID: request.requestID)
            } else {
                loop.execute { self.finish(response, to: head, requestID: request.requestID) }
            }
        }
    }

    private func finish(_ response: HTTPResponse, to head: RequestHead, requestID: String) {
        context.requestFinished()
        answer(response, to: head, requestID: requestID)
    }

    private func answer(_ response: HTTPResponse, to head: RequestHead, requestID: String) {
        guard state == .handling, let bev = bufferEvent else { return }
        let keepAlive = head.keepAlive && !peerClosedInput && !context.isDraining
        write(response, keepAlive: keepAlive, http10: head.minorVersion == 0,
              omitBody: head.method == .head, requestID: requestID)
        if !keepAlive {
            closeAfterWrite()
            return
        }
        state = .reading
        if evbuffer_get_length(bufferevent_get_output(bev)) > context.configuration.maxPendingOutputBytes {
            waitingForOutput = true
            return
        }
        takeInput()
        process()
    }

    /// Answers a request that could not be read, then closes (after lingering).
    private func fail(_ error: RequestParseError) {
        guard bufferEvent != nil else { return }
        write(.error(error.status, error.message), keepAlive: false, http10: false, omitBody: false, requestID: nil)
        input.removeAll()
        closeAfterWrite()
    }

    /// The last answer is queued: linger now if it is already sent, else once it is.
    private func closeAfterWrite() {
        state = .closingAfterWrite
        if !hasPendingOutput { linger() }
    }

    // MARK: Writing

    private func write(_ response: HTTPResponse, keepAlive: Bool, http10: Bool, omitBody: Bool, requestID: String?) {
        guard let bev = bufferEvent else { return }
        var out: [UInt8] = []
        out.reserveCapacity(160 + response.body.count)
        out.append(contentsOf: "HTTP/1.1 ".utf8)
        out.append(contentsOf: String(response.status).utf8)
        out.append(UInt8(ascii: " "))
        out.append(contentsOf: reasonPhrase(response.status).utf8)
        out.append(contentsOf: [0x0D, 0x0A])
        for (name, value) in response.headers {
            appendHeader(name, value, to: &out)
        }
        if response.status != 204 && response.status >= 200 {
            out.append(contentsOf: "Content-Length: ".utf8)
            out.append(contentsOf: String(response.body.count).utf8)
            out.append(contentsOf: [0x0D, 0x0A])
        }
        if let requestID, !response.headers.contains("X-Request-ID") {
            appendHeader("X-Request-ID", requestID, to: &out)
        }
        if !keepAlive {
            out.append(contentsOf: "Connection: close\r\n".utf8)
        } else if http10 {
            out.append(contentsOf: "Connection: keep-alive\r\n".utf8)
        }
        out.append(contentsOf: [0x0D, 0x0A])
        if !omitBody && response.status != 204 { out.append(contentsOf: response.body) }
        out.withUnsafeBytes { send($0, on: bev) }
    }

    /// Writes `bytes` to the socket now when nothing is queued before them; what the kernel does
    /// not take (or cannot, on an error) goes to libevent's output buffer and write event, which
    /// calls `onOutputDrained` once all is sent (or reports the error).
    private func send(_ bytes: UnsafeRawBufferPointer, on bev: OpaquePointer) {
        guard let output = bufferevent_get_output(bev) else { return }
        var sent = 0
        if evbuffer_get_length(output) == 0 {
            sent = max(0, Glibc.send(bufferevent_getfd(bev), bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL)))
        }
        if sent < bytes.count {
            evbuffer_add(output, bytes.baseAddress! + sent, bytes.count - sent)
            bufferevent_enable(bev, Int16(EV_WRITE))
        }
    }

    // MARK: Closing

    /// Shuts the write side and discards input until the client closes or the linger time ends.
    private func linger() {
        guard let bev = bufferEvent else { return }
        state = .lingering
        shutdown(bufferevent_getfd(bev), Int32(SHUT_WR))
        var linger = timeval(context.configuration.lingerTimeout)
        bufferevent_set_timeouts(bev, &linger, nil)
        bufferevent_enable(bev, Int16(EV_READ))
    }

    /// Frees the socket now; a handler still running later finds the connection closed.
    func close() {
        guard let bev = bufferEvent else { return }
        bufferEvent = nil
        state = .closed
        bufferevent_free(bev)
        input = []
        owner.connectionClosed(self)
    }

    /// Closes if idle; otherwise the current request's answer is the last. Used when draining.
    func closeIfIdle() -> Bool {
        if state == .closed { return true }
        if isIdle || state == .lingering {
            close()
            return true
        }
        return false
    }
}

/// Appends `name: value` and CRLF.
private func appendHeader(_ name: String, _ value: String, to out: inout [UInt8]) {
    out.append(contentsOf: name.utf8)
    out.append(contentsOf: [UInt8(ascii: ":"), UInt8(ascii: " ")])
    out.append(contentsOf: value.utf8)
    out.append(contentsOf: [0x0D, 0x0A])
}
