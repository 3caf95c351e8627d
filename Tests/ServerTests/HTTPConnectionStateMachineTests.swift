import Testing
@testable import Server

/// The connection's decisions alone: no socket, a clock driven by hand.
@Suite("HTTP connection state machine (no socket)")
struct HTTPConnectionStateMachineTests {
    private let timeouts = HTTPConnectionStateMachine.Timeouts(io: .seconds(30), linger: .seconds(2))
    private let t0 = Duration.seconds(100)

    private func machine() -> HTTPConnectionStateMachine {
        HTTPConnectionStateMachine(timeouts: timeouts, maxPendingInputBytes: 1000)
    }

    @Test func keepAliveRequestsAreServedOneAtATimeWithADeadlinePerState() {
        var m = machine()
        #expect(m.started(now: t0) == [.armDeadline(.io)])
        #expect(m.deadline == t0 + .seconds(30))
        #expect(m.readable(bufferedInput: 0) == .receive(thenParse: true))
        #expect(m.canParse)
        m.requestDispatched()
        #expect(m.state == .handling && !m.canParse)
        // While busy, bytes are taken up to the bound, then reading pauses.
        #expect(m.readable(bufferedInput: 999) == .receive(thenParse: false))
        #expect(m.readable(bufferedInput: 1000) == .pause)
        #expect(m.handlerStarted(now: t0 + .seconds(1)) == [.armDeadline(.io)])
        #expect(m.deadline == t0 + .seconds(31))
        #expect(m.answerReady(keepAliveRequested: true, hasBufferedInput: true, draining: false) == true)
        #expect(m.answerQueued(keepAlive: true, outputOverBound: false, now: t0 + .seconds(2)) == [.armDeadline(.io), .resumeReading, .parse])
        #expect(m.state == .reading && m.canParse && !m.readPaused)
        #expect(m.deadline == t0 + .seconds(32))
    }

    @Test func aClientClosingMidPipelineStillGetsItsAnswerThenTheConnectionLingersAndCloses() {
        var m = machine()
        _ = m.started(now: t0)
        m.requestDispatched()
        _ = m.handlerStarted(now: t0)
        #expect(m.inputEnded() == [.pauseReading])
        #expect(m.state == .handling)
        // Pipelined requests still buffered are answered; this was the last one.
        #expect(m.answerReady(keepAliveRequested: true, hasBufferedInput: true, draining: false) == true)
        #expect(m.answerReady(keepAliveRequested: true, hasBufferedInput: false, draining: false) == false)
        #expect(m.answerQueued(keepAlive: false, outputOverBound: false, now: t0) == [.lingerIfWritten])
        #expect(m.state == .closingAfterWrite)
        #expect(m.outputDrained(now: t0 + .seconds(1)) == [.linger, .armDeadline(.linger)])
        #expect(m.state == .lingering && m.deadline == t0 + .seconds(3))
        #expect(m.readable(bufferedInput: 0) == .discard)
        #expect(m.deadlinePassed(now: t0 + .seconds(3), midRequest: false, hasPendingOutput: false) == [.close])
        #expect(m.state == .closed)
        #expect(m.readable(bufferedInput: 0) == .none)
    }

    @Test func anUnfinishedRequestAtTheEndOfInputIsNeverAnswered() {
        var m = machine()
        _ = m.started(now: t0)
        #expect(m.inputEnded() == [.pauseReading, .lingerIfWritten])
        #expect(m.state == .closingAfterWrite)
    }

    @Test func aSlowRequestTimesOutWith408AndAnOverrunningHandlerWith503() {
        var reading = machine()
        _ = reading.started(now: t0)
        #expect(reading.deadlinePassed(now: t0 + .seconds(30), midRequest: true, hasPendingOutput: false)
            == [.answerError(status: 408, message: "Request timed out"), .armDeadline(.io), .lingerIfWritten])
        #expect(reading.state == .closingAfterWrite)

        var idle = machine()
        _ = idle.started(now: t0)
        #expect(idle.deadlinePassed(now: t0 + .seconds(30), midRequest: false, hasPendingOutput: false) == [.close])

        var handling = machine()
        _ = handling.started(now: t0)
        handling.requestDispatched()
        _ = handling.handlerStarted(now: t0)
        #expect(handling.deadlinePassed(now: t0 + .seconds(30), midRequest: false, hasPendingOutput: false)
            == [.warnHandlerOverran, .answerError(status: 503, message: "Request timed out"), .armDeadline(.io), .lingerIfWritten])
        // The handler's late answer is dropped.
        #expect(handling.answerReady(keepAliveRequested: true, hasBufferedInput: false, draining: false) == nil)
    }

    @Test func aClientThatDoesNotReadItsAnswersIsResetAtTheDeadline() {
        var m = machine()
        _ = m.started(now: t0)
        m.requestDispatched()
        #expect(m.answerQueued(keepAlive: true, outputOverBound: true, now: t0) == [.armDeadline(.io)])
        #expect(m.waitingForOutput && !m.canParse)
        #expect(m.readable(bufferedInput: 0) == .receive(thenParse: false))
        #expect(m.deadlinePassed(now: t0 + .seconds(30), midRequest: false, hasPendingOutput: true) == [.abort])
        #expect(m.state == .closed)
    }

    @Test func drainedOutputResumesReadingAndParsing() {
        var m = machine()
        _ = m.started(now: t0)
        m.requestDispatched()
        _ = m.answerQueued(keepAlive: true, outputOverBound: true, now: t0)
        #expect(m.readable(bufferedInput: 1000) == .pause)
        #expect(m.outputDrained(now: t0) == [.resumeReading, .parse])
        #expect(!m.waitingForOutput && m.canParse)
    }

    @Test func drainingClosesIdleConnectionsAndAnswersBusyOnesLast() {
        var idle = machine()
        _ = idle.started(now: t0)
        let closedIdle = idle.closeIfIdle(midRequest: false)
        #expect(closedIdle)
        #expect(idle.state == .closed)

        var midRequest = machine()
        _ = midRequest.started(now: t0)
        let closedMidRequest = midRequest.closeIfIdle(midRequest: true)
        #expect(!closedMidRequest)

        var busy = machine()
        _ = busy.started(now: t0)
        busy.requestDispatched()
        let closedBusy = busy.closeIfIdle(midRequest: false)
        #expect(!closedBusy)
        #expect(busy.answerReady(keepAliveRequested: true, hasBufferedInput: false, draining: true) == false)
    }

    @Test func aParseErrorIsAnsweredThenTheConnectionCloses() {
        var m = machine()
        _ = m.started(now: t0)
        #expect(m.parseFailed(status: 431, message: "Request header fields too large", now: t0)
            == [.answerError(status: 431, message: "Request header fields too large"), .armDeadline(.io), .lingerIfWritten])
        #expect(!m.canParse)
        #expect(m.socketFailed() == [.close])
        #expect(m.socketFailed() == [])
    }

    @Test func aStreamedAnswerHasOneDeadlineForAllOfItAndTheNextRequestWaitsForItsEnd() {
        var m = machine()
        _ = m.started(now: t0)
        m.requestDispatched()
        _ = m.handlerStarted(now: t0)
        #expect(m.answerReady(keepAliveRequested: true, hasBufferedInput: false, draining: false) == true)
        #expect(m.streamStarted(now: t0 + .seconds(1)) == [.armDeadline(.io)])
        #expect(m.state == .streaming && !m.canParse && !m.isIdle(midRequest: false))
        #expect(m.deadline == t0 + .seconds(31))
        #expect(m.readable(bufferedInput: 0) == .receive(thenParse: false), "pipelined bytes wait")
        #expect(m.outputDrained(now: t0 + .seconds(2)) == [], "a drain mid-stream parses nothing")
        let closedForDrain = m.closeIfIdle(midRequest: false)
        #expect(!closedForDrain, "a drain waits for the stream")
        #expect(m.answerQueued(keepAlive: true, outputOverBound: false, now: t0 + .seconds(3)) == [.armDeadline(.io), .parse])
        #expect(m.state == .reading)
    }

    @Test func aStreamThatOutlivesItsDeadlineOrFailsResetsTheConnection() {
        var m = machine()
        _ = m.started(now: t0)
        m.requestDispatched()
        _ = m.streamStarted(now: t0)
        #expect(m.deadlinePassed(now: t0 + .seconds(30), midRequest: false, hasPendingOutput: true) == [.abort])
        #expect(m.state == .closed)
        var failed = machine()
        _ = failed.started(now: t0)
        failed.requestDispatched()
        _ = failed.streamStarted(now: t0)
        #expect(failed.streamFailed() == [.abort])
        #expect(failed.state == .closed)
        #expect(failed.answerQueued(keepAlive: true, outputOverBound: false, now: t0) == [], "nothing after a reset")
    }

}
