/// The decisions of one client connection, with no socket and no clock of its own: the glue in
/// `HTTPConnection` reports what happened (bytes arrived, the input ended, a request was parsed,
/// its answer is ready, the output drained, the deadline passed) and performs the actions that
/// come back. Time is whatever `Duration` since an origin the caller passes, so tests drive it.
///
/// Requests on one connection are served one at a time, in order. Every state has an absolute
/// deadline set when it is entered and never pushed back by input: waiting for and reading a
/// request, handling it, and writing its answer (`timeouts.io` each; a streamed answer must be
/// produced and written whole in one), lingering after the last answer (`timeouts.linger`).
/// A client trickling one byte a second gains nothing.
struct HTTPConnectionStateMachine {
    enum State: Equatable {
        /// Waiting for (more of) a request.
        case reading
        /// A handler is running.
        case handling
        /// A streamed answer is being produced and written (`HTTPResponse.bodyStream`).
        case streaming
        /// The last answer is queued; linger once it is written.
        case closingAfterWrite
        /// Answer written, write side shut; discarding input until the client closes.
        case lingering
        case closed
    }

    struct Timeouts: Equatable {
        /// Reading a request, handling it, writing its answer: each at most this long.
        var io: Duration
        /// Lingering after the last answer.
        var linger: Duration
    }

    enum Deadline: Equatable {
        case io
        case linger
    }

    enum Action: Equatable {
        /// Restart the deadline timer with this timeout.
        case armDeadline(Deadline)
        case pauseReading
        case resumeReading
        /// Parse what has arrived and dispatch whole requests while `canParse`.
        case parse
        /// Write this error answer with `Connection: close`, then do `lingerIfWritten`.
        case answerError(status: Int, message: String)
        /// Report `outputDrained` now if nothing waits to be written.
        case lingerIfWritten
        /// Shut the write side and read (discarding) until the client closes.
        case linger
        /// The handler overran its deadline: log it (its late answer will be dropped).
        case warnHandlerOverran
        case close
        /// Close with a reset (the client stopped reading: drop what the kernel still holds).
        case abort
    }

    /// What to do when the socket is readable.
    enum ReadStep: Equatable {
        /// One `recv`; then `parse` when `thenParse`.
        case receive(thenParse: Bool)
        /// One `recv` whose bytes are dropped (lingering).
        case discard
        /// Pause reading: the bound of input held while busy is reached.
        case pause
        /// Nothing (the connection is closed).
        case none
    }

    private(set) var state: State = .reading
    /// The client shut its sending side; nothing more will arrive.
    private(set) var peerClosedInput = false
    /// An answer is queued but the output is over its bound: no more requests until it drains.
    private(set) var waitingForOutput = false
    /// Reading is paused (input bound reached while busy, or the input ended).
    private(set) var readPaused = false
    /// When the current state's time is up.
    private(set) var deadline: Duration = .zero
    let timeouts: Timeouts
    /// Input held while a request is answered before reading pauses.
    let maxPendingInputBytes: Int

    init(timeouts: Timeouts, maxPendingInputBytes: Int) {
        self.timeouts = timeouts
        self.maxPendingInputBytes = maxPendingInputBytes
    }

    /// Whether a new request may be parsed and dispatched now.
    var canParse: Bool { state == .reading && !waitingForOutput }

    /// True when no request is being read, handled or answered.
    func isIdle(midRequest: Bool) -> Bool {
        state == .reading && !midRequest && !waitingForOutput
    }

    // MARK: Events

    mutating func started(now: Duration) -> [Action] {
        [arm(.io, now: now)]
    }

    mutating func readable(bufferedInput: Int) -> ReadStep {
        switch state {
        case .lingering:
            return .discard
        case .closed:
            return .none
        case .reading, .handling, .streaming, .closingAfterWrite:
            let busy = state != .reading || waitingForOutput
            if busy && bufferedInput >= maxPendingInputBytes {
                readPaused = true
                return .pause
            }
            return .receive(thenParse: !busy)
        }
    }

    /// The client shut its sending side: the requests it sent whole are still answered, then the
    /// connection closes; a request it left unfinished never will be.
    mutating func inputEnded() -> [Action] {
        peerClosedInput = true
        var actions = pauseReading()
        switch state {
        case .handling, .streaming, .closingAfterWrite, .closed:
            break
        case .reading where waitingForOutput:
            break
        case .reading:
            actions += closeAfterWrite()
        case .lingering:
            actions.append(close())
        }
        return actions
    }

    /// `recv` or `send` failed for good.
    mutating func socketFailed() -> [Action] {
        state == .closed ? [] : [close()]
    }

    /// The deadline timer fired. (Arming the timer replaces its earlier arming, so a firing is
    /// always for the current state; `now` is not compared with `deadline`, whose clock may run a
    /// little ahead of the loop's.)
    mutating func deadlinePassed(now: Duration, midRequest: Bool, hasPendingOutput: Bool) -> [Action] {
        switch state {
        case .reading where waitingForOutput || hasPendingOutput, .closingAfterWrite where hasPendingOutput:
            state = .closed
            return [.abort]  // the client does not read its answers
        case .reading where midRequest:
            return fail(status: 408, message: "Request timed out", now: now)
        case .handling:
            // Its database work has deadlines of its own, so this is a bug or a stall: the client
            // is told, and the handler's late answer is dropped.
            return [.warnHandlerOverran] + fail(status: 503, message: "Request timed out", now: now)
        case .streaming:
            state = .closed
            return [.abort]  // too slow a reader (or producer) for the deadline: the body is cut short
        case .reading, .closingAfterWrite, .lingering:
            return [close()]
        case .closed:
            return []
        }
    }

    /// Everything queued was written.
    mutating func outputDrained(now: Duration) -> [Action] {
        switch state {
        case .closingAfterWrite:
            return linger(now: now)
        case .reading where waitingForOutput:
            waitingForOutput = false
            return resumeReading() + [.parse]
        default:
            return []
        }
    }

    // MARK: Requests

    /// The parser needs more bytes.
    mutating func parseIncomplete() -> [Action] {
        peerClosedInput ? closeAfterWrite() : []
    }

    /// The bytes are not a request this server serves: answer the error, then close.
    mutating func parseFailed(status: Int, message: String, now: Duration) -> [Action] {
        fail(status: status, message: message, now: now)
    }

    /// A whole request was parsed and goes to the responder.
    mutating func requestDispatched() {
        state = .handling
    }

    /// The responder could not answer at once: a handler task runs, on the handling deadline.
    mutating func handlerStarted(now: Duration) -> [Action] {
        [arm(.io, now: now)]
    }

    /// The handler answered: whether to write the answer (nil: it came too late) and whether
    /// the connection stays open after it.
    mutating func answerReady(keepAliveRequested: Bool, hasBufferedInput: Bool, draining: Bool) -> Bool? {
        guard state == .handling else { return nil }
        // A client that shut its side after pipelining more requests still gets their answers.
        return keepAliveRequested && !(peerClosedInput && !hasBufferedInput) && !draining
    }

    /// The answer's head is queued and its body will be streamed: one deadline for all of it.
    mutating func streamStarted(now: Duration) -> [Action] {
        guard state == .handling else { return [] }
        state = .streaming
        return [arm(.io, now: now)]
    }

    /// A part of an open-ended stream was queued: its deadline starts again (a client that stops
    /// taking parts is cut off one timeout after the last it took).
    mutating func streamProgressed(now: Duration) -> [Action] {
        guard state == .streaming else { return [] }
        return [arm(.io, now: now)]
    }

    /// The streamed body could not be finished (its producer failed): the client must see it
    /// cut short, so the connection is reset.
    mutating func streamFailed() -> [Action] {
        guard state == .streaming else { return [] }
        state = .closed
        return [.abort]
    }

    /// The answer is queued for writing (a streamed one: its last part).
    mutating func answerQueued(keepAlive: Bool, outputOverBound: Bool, now: Duration) -> [Action] {
        guard state == .handling || state == .streaming else { return [] }
        guard keepAlive else { return closeAfterWrite() }
        state = .reading
        // One window for writing this answer and reading the next request.
        var actions: [Action] = [arm(.io, now: now)]
        if outputOverBound {
            waitingForOutput = true
            return actions
        }
        actions += resumeReading()
        actions.append(.parse)
        return actions
    }

    /// The server drains: true when the connection may be closed now (it is closed then).
    mutating func closeIfIdle(midRequest: Bool) -> Bool {
        if state == .closed { return true }
        guard isIdle(midRequest: midRequest) || state == .lingering else { return false }
        state = .closed
        return true
    }

    /// The glue closed the connection.
    mutating func closed() {
        state = .closed
    }

    // MARK: Transitions

    private mutating func arm(_ kind: Deadline, now: Duration) -> Action {
        deadline = now + (kind == .io ? timeouts.io : timeouts.linger)
        return .armDeadline(kind)
    }

    private mutating func fail(status: Int, message: String, now: Duration) -> [Action] {
        guard state != .closed else { return [] }
        state = .closingAfterWrite
        return [.answerError(status: status, message: message), arm(.io, now: now), .lingerIfWritten]
    }

    private mutating func closeAfterWrite() -> [Action] {
        state = .closingAfterWrite
        return [.lingerIfWritten]
    }

    private mutating func linger(now: Duration) -> [Action] {
        state = .lingering
        readPaused = false
        return [.linger, arm(.linger, now: now)]
    }

    private mutating func pauseReading() -> [Action] {
        guard !readPaused else { return [] }
        readPaused = true
        return [.pauseReading]
    }

    private mutating func resumeReading() -> [Action] {
        guard readPaused, !peerClosedInput else { return [] }
        readPaused = false
        return [.resumeReading]
    }

    private mutating func close() -> Action {
        state = .closed
        return .close
    }
}
