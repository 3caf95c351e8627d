import CLibEvent
import EventLoopCore
import Glibc
import Logging

/// One client connection on one event loop: reads requests, hands each to the responder (at
/// once when it can answer without suspending, else as a Swift task), and writes the answers
/// back in order. Requests on one connection are served one at a time, so pipelined requests
/// are answered in the order they came.
///
/// The socket is driven by two plain libevent events. Reading stays registered for the
/// connection's whole life (no `epoll_ctl` per request) and is one `recv` per readiness; while a
/// request is answered, later bytes wait in `input` up to `maxPendingInputBytes`, beyond which
/// reading pauses. Answers are written to the socket at once; only what the kernel does not take
/// waits in `pendingOutput` for the write event.
///
/// Every state has an absolute deadline on one timer, set when the state is entered and never
/// pushed back by input: waiting for and reading a request, handling it, writing its answer
/// (`HTTP_TIMEOUT_S` each), lingering after an error (`lingerTimeout`). A client trickling one
/// byte a second gains nothing.
final class HTTPConnection: @unchecked Sendable {  // every mutable property is touched only on `owner.loop`'s thread
    private enum State {
        /// Waiting for (more of) a request.
        case reading
        /// A handler is running.
        case handling
        /// The last answer is queued; close once it is written.
        case closingAfterWrite
        /// Answer written, write side shut; discarding input until the client closes.
        case lingering
        case closed
    }

    private unowned let owner: ServerLoop
    /// Held directly (it holds no connection): read several times per request, and reaching it
    /// through the unowned `owner` cost a strong retain and release each time.
    private let context: ServerContext
    private let socket: Int32
    private var readEvent: OpaquePointer?
    private var writeEvent: OpaquePointer?
    /// The current state's deadline (a plain timer, armed on each state change).
    private var deadlineEvent: OpaquePointer?
    /// Answer bytes the kernel has not taken yet (an evbuffer), written when the socket is writable.
    private var pendingOutput: OpaquePointer?
    private var input: [UInt8] = []
    private var parser: RequestParser
    private var state: State = .reading
    /// The client shut its sending side; nothing more will arrive.
    private var peerClosedInput = false
    /// The answer is queued but the output buffer is over its high-water mark.
    private var waitingForOutput = false
    /// The read event is unregistered (input bound reached while busy, or end of input seen).
    private var readPaused = false
    /// The write event is registered.
    private var writeArmed = false
    /// `process()` is on the stack (an answer given during `dispatch` must not re-enter it).
    private var processing = false

    init(owner: ServerLoop, socket: Int32) {
        self.owner = owner
        self.context = owner.context
        self.socket = socket
        let configuration = owner.context.configuration
        parser = RequestParser(maxHeaderBytes: configuration.maxHeaderBytes, maxBodyBytes: configuration.maxBodyBytes)
    }

    /// Registers the events and starts reading (closes at once if libevent cannot).
    func start() {
        let me = Unmanaged.passUnretained(self).toOpaque()
        let base = owner.loop.base
        readEvent = event_new(base, socket, Int16(EV_READ | EV_PERSIST), { _, what, context in
            let connection = Unmanaged<HTTPConnection>.fromOpaque(context!).takeUnretainedValue()
            withExtendedLifetime(connection) { connection.onReadEvent(what) }
        }, me)
        writeEvent = event_new(base, socket, Int16(EV_WRITE | EV_PERSIST), { _, what, context in
            let connection = Unmanaged<HTTPConnection>.fromOpaque(context!).takeUnretainedValue()
            withExtendedLifetime(connection) { connection.onWriteEvent(what) }
        }, me)
        deadlineEvent = event_new(base, -1, 0, { _, _, context in
            let connection = Unmanaged<HTTPConnection>.fromOpaque(context!).takeUnretainedValue()
            withExtendedLifetime(connection) { connection.onDeadline() }
        }, me)
        pendingOutput = evbuffer_new()
        guard let readEvent, writeEvent != nil, deadlineEvent != nil, pendingOutput != nil else {
            close()
            return
        }
        event_add(readEvent, nil)
        armDeadline(owner.ioTimeout)
    }

    /// Sets the deadline of the state just entered (`timeout` is one of the loop's common timeouts).
    private func armDeadline(_ timeout: timeval) {
        guard let deadlineEvent else { return }
        var timeout = timeout
        event_add(deadlineEvent, &timeout)
    }

    /// True when no request is being read, handled or answered (safe to close when draining).
    var isIdle: Bool {
        state == .reading && !parser.isMidRequest(input) && !waitingForOutput
    }

    // MARK: Events

    private func onReadEvent(_ what: Int16) {
        switch state {
        case .lingering:
            discardInput()
        case .closed:
            break
        case .reading, .handling, .closingAfterWrite:
            readInput()
        }
    }

    /// One `recv` into `input`. While a request is being answered only up to
    /// `maxPendingInputBytes` are taken; then reading pauses until the connection catches up.
    private func readInput() {
        let busy = state != .reading || waitingForOutput
        if busy && input.count >= context.configuration.maxPendingInputBytes {
            pauseReading()
            return
        }
        let buffer = owner.readBuffer
        let count = recv(socket, buffer.baseAddress, buffer.count, 0)
        if count > 0 {
            input.append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[..<count]))
            if !busy { process() }
        } else if count == 0 {
            onEndOfInput()
        } else if !isTransientSocketError(errno) {
            close()
        }
    }

    /// The client shut its sending side: the requests it sent in full are still answered (a
    /// handler running, or pipelined ones waiting for output to drain), then the connection
    /// closes; a request it left unfinished never will be.
    private func onEndOfInput() {
        peerClosedInput = true
        pauseReading()
        switch state {
        case .handling, .closingAfterWrite, .closed:
            break
        case .reading where waitingForOutput:
            break
        case .reading:
            // `process()` has taken every whole request; what is left cannot be finished.
            closeAfterWrite()
        case .lingering:
            close()
        }
    }

    /// The current state ran out of time.
    private func onDeadline() {
        switch state {
        case .reading where waitingForOutput || hasPendingOutput, .closingAfterWrite where hasPendingOutput:
            abort()  // the client does not read its answers
        case .reading where parser.isMidRequest(input):
            fail(RequestParseError(status: 408, message: "Request timed out"))
        case .handling:
            // The handler overran (its database work has deadlines of its own, so this is a
            // bug or a stall): the client is told, and the handler's late answer is dropped.
            context.logger.warning("request handler overran the timeout; answering 503")
            fail(RequestParseError(status: 503, message: "Request timed out"))
        case .reading, .closingAfterWrite, .lingering:
            close()
        case .closed:
            break
        }
    }

    /// Lingering: reads and drops what the client still sends, closing at its end or an error.
    private func discardInput() {
        let buffer = owner.readBuffer
        let count = recv(socket, buffer.baseAddress, buffer.count, 0)
        if count == 0 || (count < 0 && !isTransientSocketError(errno)) {
            close()
        }
    }

    private func onWriteEvent(_ what: Int16) {
        guard let pendingOutput else {
            close()
            return
        }
        if evbuffer_write(pendingOutput, socket) < 0 && !isTransientSocketError(errno) {
            close()
            return
        }
        guard evbuffer_get_length(pendingOutput) == 0 else { return }
        if let writeEvent { event_del(writeEvent) }
        writeArmed = false
        onOutputDrained()
    }

    private func onOutputDrained() {
        switch state {
        case .closingAfterWrite:
            linger()
        case .reading where waitingForOutput:
            waitingForOutput = false
            resumeReading()
            process()
        default:
            break
        }
    }

    private var hasPendingOutput: Bool {
        guard let pendingOutput else { return false }
        return evbuffer_get_length(pendingOutput) > 0
    }

    private func pauseReading() {
        guard !readPaused, let readEvent else { return }
        event_del(readEvent)
        readPaused = true
    }

    private func resumeReading() {
        guard readPaused, !peerClosedInput, let readEvent else { return }
        event_add(readEvent, nil)
        readPaused = false
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
            switch parser.parse(&input) {
            case .incomplete(let sendContinue):
                if peerClosedInput {
                    closeAfterWrite()
                    return
                }
                if sendContinue {
                    let line: StaticString = "HTTP/1.1 100 Continue\r\n\r\n"
                    send(UnsafeRawBufferPointer(start: line.utf8Start, count: line.utf8CodeUnitCount))
                }
                if input.isEmpty && input.capacity > Self.idleInputCapacity {
                    input = []  // an idle connection gives back what a large request made it hold
                }
                return
            case .failure(let error):
                fail(error)
                return
            case .request(let head, let body):
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
        armDeadline(owner.ioTimeout)  // the handler's time (synchronous answers need none)
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
        guard state == .handling else { return }
        // A client that shut its side after pipelining more requests still gets their answers.
        let keepAlive = head.keepAlive && !(peerClosedInput && input.isEmpty) && !context.isDraining
        write(response, keepAlive: keepAlive, http10: head.minorVersion == 0,
              omitBody: head.method == .head, requestID: requestID)
        if !keepAlive {
            closeAfterWrite()
            return
        }
        state = .reading
        // One window for writing this answer and reading the next request.
        armDeadline(owner.ioTimeout)
        if let pendingOutput, evbuffer_get_length(pendingOutput) > context.configuration.maxPendingOutputBytes {
            waitingForOutput = true
            return
        }
        resumeReading()
        process()
    }

    /// Answers a request that could not be read, then closes (after lingering).
    private func fail(_ error: RequestParseError) {
        guard state != .closed else { return }
        var response = HTTPResponse.error(error.status, error.message)
        if error.status == 503 { response.headers["Retry-After"] = "1" }
        write(response, keepAlive: false, http10: false, omitBody: false, requestID: nil)
        input = []
        armDeadline(owner.ioTimeout)
        closeAfterWrite()
    }

    /// The last answer is queued: linger now if it is already sent, else once it is.
    private func closeAfterWrite() {
        state = .closingAfterWrite
        if !hasPendingOutput { linger() }
    }

    // MARK: Writing

    private func write(_ response: HTTPResponse, keepAlive: Bool, http10: Bool, omitBody: Bool, requestID: String?) {
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
        out.withUnsafeBytes { send($0) }
    }

    /// Writes `bytes` to the socket now when nothing is queued before them; what the kernel does
    /// not take (or cannot, on an error) waits in `pendingOutput` for the write event, which
    /// calls `onOutputDrained` once all is sent (or closes on the error).
    private func send(_ bytes: UnsafeRawBufferPointer) {
        guard let pendingOutput, let writeEvent else { return }
        var sent = 0
        if evbuffer_get_length(pendingOutput) == 0 {
            sent = max(0, Glibc.send(socket, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL)))
        }
        guard sent < bytes.count else { return }
        evbuffer_add(pendingOutput, bytes.baseAddress! + sent, bytes.count - sent)
        if !writeArmed {
            event_add(writeEvent, nil)
            writeArmed = true
        }
    }

    // MARK: Closing

    /// Shuts the write side and discards input until the client closes or the linger time ends.
    private func linger() {
        guard let readEvent else { return }
        state = .lingering
        shutdown(socket, Int32(SHUT_WR))
        event_add(readEvent, nil)
        readPaused = false
        armDeadline(owner.lingerTimeout)
    }

    /// Frees the socket now; a handler still running later finds the connection closed.
    func close() {
        guard state != .closed else { return }
        state = .closed
        if let readEvent { event_free(readEvent) }
        if let writeEvent { event_free(writeEvent) }
        if let deadlineEvent { event_free(deadlineEvent) }
        if let pendingOutput { evbuffer_free(pendingOutput) }
        readEvent = nil
        writeEvent = nil
        deadlineEvent = nil
        pendingOutput = nil
        Glibc.close(socket)
        input = []
        owner.connectionClosed(self)
    }

    /// Closes with a reset: what the kernel still holds for a client that stopped reading is
    /// dropped too, rather than trickled out after the close.
    private func abort() {
        var reset = Glibc.linger(l_onoff: 1, l_linger: 0)
        setsockopt(socket, SOL_SOCKET, SO_LINGER, &reset, socklen_t(MemoryLayout<Glibc.linger>.size))
        close()
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

extension HTTPConnection {
    /// Input capacity an idle connection may keep; a larger buffer (left by a large request)
    /// is given back once the connection has nothing to parse.
    static let idleInputCapacity = 4096
}

/// EAGAIN, EWOULDBLOCK and EINTR: try again later, not a failure of the socket.
func isTransientSocketError(_ code: Int32) -> Bool {
    code == EAGAIN || code == EWOULDBLOCK || code == EINTR
}

/// Appends `name: value` and CRLF.
private func appendHeader(_ name: String, _ value: String, to out: inout [UInt8]) {
    out.append(contentsOf: name.utf8)
    out.append(contentsOf: [UInt8(ascii: ":"), UInt8(ascii: " ")])
    out.append(contentsOf: value.utf8)
    out.append(contentsOf: [0x0D, 0x0A])
}
