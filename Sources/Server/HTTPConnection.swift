import EventLoopCore
import Glibc

/// One client connection on one event loop: the socket I/O around an
/// `HTTPConnectionStateMachine`, which makes every decision. Reads requests, hands each to the
/// responder (at once when it can answer without suspending, else as a Swift task), and writes
/// the answers back in order.
///
/// Reading stays registered for the connection's whole life (no `epoll_ctl` per request) and is
/// one `recv` per readiness; while a request is answered, later bytes wait in `input` up to
/// `maxPendingInputBytes`, beyond which reading pauses. Answers are written to the socket at
/// once; only what the kernel does not take waits in `pendingOutput` for the write watcher.
final class HTTPConnection: @unchecked Sendable {  // every mutable property is touched only on `owner.loop`'s thread
    private unowned let owner: ServerLoop
    /// Held directly (it holds no connection): read several times per request, and reaching it
    /// through the unowned `owner` cost a strong retain and release each time.
    private let context: ServerContext
    private let socket: Int32
    private var machine: HTTPConnectionStateMachine
    private var reader: IOWatcher?
    private var writer: IOWatcher?
    private var deadlineTimer: LoopTimer?
    private var pendingOutput = OutputBuffer()
    private var input: [UInt8] = []
    private var parser: RequestParser
    /// `process()` is on the stack (an answer given during `dispatch` must not re-enter it).
    private var processing = false
    /// The socket is still open (`close()` has not run).
    private var isOpen = true
    /// The streamed answer being written: its framing, and its producer while it waits for the
    /// output to drain.
    private var stream: (chunked: Bool, keepAlive: Bool, openEnded: Bool, waiting: CheckedContinuation<Void, Error>?)?

    init(owner: ServerLoop, socket: Int32) {
        self.owner = owner
        self.context = owner.context
        self.socket = socket
        let configuration = owner.context.configuration
        parser = RequestParser(maxHeaderBytes: configuration.maxHeaderBytes, maxBodyBytes: configuration.maxBodyBytes)
        machine = HTTPConnectionStateMachine(
            timeouts: .init(io: configuration.timeout, linger: configuration.lingerTimeout),
            maxPendingInputBytes: configuration.maxPendingInputBytes
        )
    }

    /// Registers the watchers and starts reading (closes at once if libevent cannot).
    func start() {
        let loop = owner.loop
        reader = IOWatcher(loop: loop, descriptor: socket, interest: .read) { [unowned self] in onReadable() }
        writer = IOWatcher(loop: loop, descriptor: socket, interest: .write) { [unowned self] in onWritable() }
        deadlineTimer = LoopTimer(loop: loop) { [unowned self] in onDeadline() }
        guard let reader, writer != nil, deadlineTimer != nil else {
            close()
            return
        }
        reader.arm()
        perform(machine.started(now: now))
    }

    /// True when no request is being read, handled or answered (safe to close when draining).
    var isIdle: Bool { machine.isIdle(midRequest: parser.isMidRequest(input)) }

    private var now: Duration { .nanoseconds(Int64(monotonicNanoseconds())) }

    // MARK: Events

    private func onReadable() {
        switch machine.readable(bufferedInput: input.count) {
        case .receive(let thenParse):
            let buffer = owner.readBuffer
            let count = recv(socket, buffer.baseAddress, buffer.count, 0)
            if count > 0 {
                input.append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[..<count]))
                if thenParse { process() }
            } else if count == 0 {
                perform(machine.inputEnded())
            } else if !isTransientSocketError(errno) {
                perform(machine.socketFailed())
            }
        case .discard:
            let buffer = owner.readBuffer
            let count = recv(socket, buffer.baseAddress, buffer.count, 0)
            if count == 0 || (count < 0 && !isTransientSocketError(errno)) {
                close()
            }
        case .pause:
            reader?.disarm()
        case .none:
            break
        }
    }

    private func onDeadline() {
        perform(machine.deadlinePassed(now: now, midRequest: parser.isMidRequest(input), hasPendingOutput: !pendingOutput.isEmpty))
    }

    private func onWritable() {
        guard pendingOutput.write(to: socket) else {
            perform(machine.socketFailed())
            return
        }
        guard pendingOutput.isEmpty else { return }
        writer?.disarm()
        if let current = stream {
            if current.openEnded { perform(machine.streamProgressed(now: now)) }
            if let waiting = current.waiting {
                stream?.waiting = nil
                waiting.resume()
            }
        }
        perform(machine.outputDrained(now: now))
    }

    /// Carries out the machine's decisions, in order.
    private func perform(_ actions: [HTTPConnectionStateMachine.Action]) {
        for action in actions {
            switch action {
            case .armDeadline(let kind):
                deadlineTimer?.arm(after: kind == .io ? owner.ioTimeout : owner.lingerTimeout)
            case .pauseReading:
                reader?.disarm()
            case .resumeReading:
                reader?.arm()
            case .parse:
                process()
            case .answerError(let status, let message):
                var response = HTTPResponse.error(status, message)
                if status == 503 { response.headers["Retry-After"] = String(context.configuration.retryAfterSeconds) }
                send(ResponseSerializer.bytes(of: response, keepAlive: false, http10: false, omitBody: false, requestID: nil, dateLine: owner.dateHeader.current()))
                input = []
            case .lingerIfWritten:
                if pendingOutput.isEmpty { perform(machine.outputDrained(now: now)) }
            case .linger:
                shutdown(socket, Int32(SHUT_WR))
                reader?.arm()
            case .warnHandlerOverran:
                context.logger.warning("request handler overran the timeout; answering 503")
            case .close:
                close()
            case .abort:
                abort()
            }
        }
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
        while machine.canParse {
            switch parser.parse(&input) {
            case .incomplete(let sendContinue):
                if sendContinue && !machine.peerClosedInput {
                    ResponseSerializer.continueLine.withUnsafeBytes { send($0) }
                }
                if input.isEmpty && input.capacity > Self.idleBufferCapacity {
                    input = []  // an idle connection gives back what a large request made it hold
                }
                perform(machine.parseIncomplete())
                return
            case .failure(let error):
                perform(machine.parseFailed(status: error.status, message: error.message, now: now))
                return
            case .request(let head, let body):
                dispatch(head, body: body)
            }
        }
    }

    private func dispatch(_ head: RequestHead, body: [UInt8]) {
        machine.requestDispatched()
        let target = head.target
        let queryStart = target.utf8.firstIndex(of: UInt8(ascii: "?"))
        let path = queryStart.map { String(target[..<$0]) } ?? target
        let query = queryStart.map { QueryParameters(target[target.index(after: $0)...]) } ?? QueryParameters("")
        let request = HTTPRequest(
            method: head.method, path: path, query: query, headers: head.headers, body: body,
            requestID: context.requestIDs.id(for: head.headers["X-Request-ID"])
        )
        context.requestStarted()
        switch context.responder.answer(request) {
        case .now(let response):
            finish(response, to: head, requestID: request.requestID)
        case .later(let handler):
            perform(machine.handlerStarted(now: now))  // the handler's time (synchronous answers need none)
            let loop = owner.loop
            // The handler starts at once on this thread and, after any suspension, resumes on
            // this loop (its task executor): none needs a hop to write its answer.
            Task.immediate(executorPreference: loop) { [request] in
                let response = await handler()
                loop.runOnLoop { self.finish(response, to: head, requestID: request.requestID) }
            }
        }
    }

    private func finish(_ response: HTTPResponse, to head: RequestHead, requestID: String) {
        let streamed = response.bodyStream != nil && head.method != .head && ResponseSerializer.mayHaveBody(response.status)
        if !streamed { context.requestFinished() }
        guard let answerKeepAlive = machine.answerReady(
            keepAliveRequested: head.keepAlive, hasBufferedInput: !input.isEmpty, draining: context.isDraining
        ) else {
            if streamed { context.requestFinished() }
            return
        }
        let http10 = head.minorVersion == 0
        // An HTTP/1.0 client learns where a streamed body ends only from the connection closing.
        let keepAlive = answerKeepAlive && !(streamed && http10)
        // HEAD gets the head a GET would (a stream's framing too), and no producer runs.
        let framing: ResponseSerializer.BodyFraming = response.bodyStream == nil ? .whole : http10 ? .untilClose : .chunked
        send(ResponseSerializer.bytes(
            of: response, keepAlive: keepAlive, http10: http10, omitBody: head.method == .head, requestID: requestID,
            dateLine: owner.dateHeader.current(), framing: framing
        ))
        guard streamed, let produce = response.bodyStream else {
            perform(machine.answerQueued(
                keepAlive: keepAlive, outputOverBound: pendingOutput.count > context.configuration.maxPendingOutputBytes, now: now
            ))
            return
        }
        startStream(produce, chunked: !http10, keepAlive: keepAlive, openEnded: response.bodyStreamIsOpenEnded)
    }

    // MARK: Streamed answers

    /// Runs the producer of a streamed body (its head is queued): its parts are written as they
    /// come, and it waits whenever more than the output bound is queued. Ends with the last chunk
    /// and the next request, or with a reset when the producer fails.
    private func startStream(_ produce: @escaping HTTPResponse.BodyStream, chunked: Bool, keepAlive: Bool, openEnded: Bool) {
        stream = (chunked, keepAlive, openEnded, nil)
        perform(machine.streamStarted(now: now))
        let loop = owner.loop
        let writer = ResponseBodyWriter(loop: loop) { [self] bytes, continuation in streamPart(bytes, continuation) }
        Task.immediate(executorPreference: loop) {
            let outcome: Result<Void, Error>
            do {
                try await produce(writer)
                outcome = .success(())
            } catch {
                outcome = .failure(error)
            }
            loop.runOnLoop { self.endStream(outcome) }
        }
    }

    /// One part of the streamed body, on the loop.
    private func streamPart(_ bytes: [UInt8], _ continuation: CheckedContinuation<Void, Error>) {
        guard isOpen, let current = stream, current.waiting == nil else {
            continuation.resume(throwing: ResponseStreamClosed())
            return
        }
        if current.chunked {
            send(Array((String(bytes.count, radix: 16) + "\r\n").utf8))
            send(bytes)
            send(Self.crlf)
        } else {
            send(bytes)
        }
        if current.openEnded && isOpen && pendingOutput.isEmpty { perform(machine.streamProgressed(now: now)) }
        if isOpen && pendingOutput.count > context.configuration.maxPendingOutputBytes {
            stream?.waiting = continuation  // resumed by `onWritable` once drained, or by `close`
        } else if isOpen {
            continuation.resume()
        } else {
            continuation.resume(throwing: ResponseStreamClosed())
        }
    }

    /// The producer returned (or threw): the body's end, then the connection goes on as after
    /// any answer; a failed body resets the connection.
    private func endStream(_ outcome: Result<Void, Error>) {
        context.requestFinished()
        guard let current = stream else { return }
        stream = nil
        guard isOpen else { return }
        switch outcome {
        case .success:
            if current.chunked { send(Self.lastChunk) }
            perform(machine.answerQueued(
                keepAlive: current.keepAlive, outputOverBound: pendingOutput.count > context.configuration.maxPendingOutputBytes, now: now
            ))
        case .failure(let error):
            if !(error is ResponseStreamClosed) {
                context.logger.warning("streamed answer failed part-way; connection reset", metadata: ["error": "\(error)"])
            }
            perform(machine.streamFailed())
        }
    }

    private static let crlf: [UInt8] = [0x0D, 0x0A]
    private static let lastChunk: [UInt8] = Array("0\r\n\r\n".utf8)

    // MARK: Writing

    private func send(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { send($0) }
    }

    /// Writes `bytes` to the socket now when nothing is queued before them; what the kernel does
    /// not take waits in `pendingOutput` for the write watcher, which reports the drain.
    private func send(_ bytes: UnsafeRawBufferPointer) {
        guard let writer else { return }
        var sent = 0
        if pendingOutput.isEmpty {
            sent = max(0, Glibc.send(socket, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL)))
        }
        guard sent < bytes.count else { return }
        pendingOutput.append(UnsafeRawBufferPointer(rebasing: bytes[sent...]))
        writer.arm()
    }

    // MARK: Closing

    /// Frees the socket now; a handler still running later finds the connection closed.
    func close() {
        guard isOpen else { return }
        isOpen = false
        machine.closed()
        reader?.cancel()
        writer?.cancel()
        deadlineTimer?.cancel()
        reader = nil
        writer = nil
        deadlineTimer = nil
        pendingOutput = OutputBuffer()
        if let waiting = stream?.waiting {
            stream?.waiting = nil
            waiting.resume(throwing: ResponseStreamClosed())
        }
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
        guard isOpen else { return true }
        guard machine.closeIfIdle(midRequest: parser.isMidRequest(input)) else { return false }
        close()
        return true
    }
}

extension HTTPConnection {
    /// Input or output capacity an idle connection may keep; a larger buffer (left by a large
    /// request or answer) is given back once it is empty.
    static let idleBufferCapacity = 4096
}

/// Answer bytes the kernel has not taken yet, written from the front as the socket drains.
struct OutputBuffer {
    private var bytes: [UInt8] = []
    private var start = 0

    var isEmpty: Bool { start == bytes.count }
    var count: Int { bytes.count - start }

    mutating func append(_ more: UnsafeRawBufferPointer) {
        if isEmpty {
            bytes.removeAll(keepingCapacity: bytes.capacity <= HTTPConnection.idleBufferCapacity)
            start = 0
        }
        bytes.append(contentsOf: more)
    }

    /// One `send` of what is queued; false when the socket failed for good.
    mutating func write(to socket: Int32) -> Bool {
        guard !isEmpty else { return true }
        let sent = bytes.withUnsafeBytes { all in
            Glibc.send(socket, all.baseAddress! + start, all.count - start, Int32(MSG_NOSIGNAL))
        }
        if sent < 0 { return isTransientSocketError(errno) }
        start += sent
        if isEmpty {
            bytes.removeAll(keepingCapacity: bytes.capacity <= HTTPConnection.idleBufferCapacity)
            start = 0
        }
        return true
    }
}

/// EAGAIN, EWOULDBLOCK and EINTR: try again later, not a failure of the socket.
func isTransientSocketError(_ code: Int32) -> Bool {
    code == EAGAIN || code == EWOULDBLOCK || code == EINTR
}
