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
    /// When the first byte of the request being read arrived (for the whole-request timeout).
    private var requestStartedAt: ContinuousClock.Instant?
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
        pendingOutput = evbuffer_new()
        guard let readEvent, writeEvent != nil, pendingOutput != nil else {
            close()
            return
        }
        var timeout = owner.ioTimeout
        event_add(readEvent, &timeout)
    }

    /// True when no request is being read, handled or answered (safe to close when draining).
    var isIdle: Bool {
        state == .reading && !parser.isMidRequest(input) && !waitingForOutput
    }

    // MARK: Events

    private func onReadEvent(_ what: Int16) {
        if what & Int16(EV_TIMEOUT) != 0 {
            onReadTimeout()
            return
        }
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
            if input.isEmpty && requestStartedAt == nil { requestStartedAt = .now }
            input.append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[..<count]))
            if !busy { process() }
        } else if count == 0 {
            onEndOfInput()
        } else if errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR {
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

    private func onReadTimeout() {
        switch state {
        case .handling, .closingAfterWrite:
            // Nothing to read while an answer is pending is no stall (the write side has its own timeout).
            break
        case .reading where waitingForOutput:
            break
        case .reading where parser.isMidRequest(input):
            fail(RequestParseError(status: 408, message: "Request timed out"))
        default:
            close()
        }
    }

    /// Lingering: reads and drops what the client still sends, closing at its end or an error.
    private func discardInput() {
        let buffer = owner.readBuffer
        let count = recv(socket, buffer.baseAddress, buffer.count, 0)
        if count == 0 || (count < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            close()
        }
    }

    private func onWriteEvent(_ what: Int16) {
        guard what & Int16(EV_TIMEOUT) == 0, let pendingOutput else {
            close()
            return
        }
        if evbuffer_write(pendingOutput, socket) < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR {
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
        var timeout = owner.ioTimeout
        event_add(readEvent, &timeout)
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
            if let started = requestStartedAt, parser.isMidRequest(input),
               ContinuousClock.now - started > context.configuration.timeout {
                fail(RequestParseError(status: 408, message: "Request timed out"))
                return
            }
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
            var timeout = owner.ioTimeout
            event_add(writeEvent, &timeout)
            writeArmed = true
        }
    }

    // MARK: Closing

    /// Shuts the write side and discards input until the client closes or the linger time ends.
    private func linger() {
        guard let readEvent else { return }
        state = .lingering
        shutdown(socket, Int32(SHUT_WR))
        event_del(readEvent)
        var linger = timeval(context.configuration.lingerTimeout)
        event_add(readEvent, &linger)
        readPaused = false
    }

    /// Frees the socket now; a handler still running later finds the connection closed.
    func close() {
        guard state != .closed else { return }
        state = .closed
        if let readEvent { event_free(readEvent) }
        if let writeEvent { event_free(writeEvent) }
        if let pendingOutput { evbuffer_free(pendingOutput) }
        readEvent = nil
        writeEvent = nil
        pendingOutput = nil
        Glibc.close(socket)
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
