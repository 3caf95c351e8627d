import Testing
@testable import Database

/// The pipeline protocol alone: no libpq, no server, a clock driven by hand. Queries are
/// names, rows are strings.
@Suite("Pipeline state machine (no database)")
struct PipelineStateMachineTests {
    typealias Machine = PipelineStateMachine<String, String>

    private static let ms: UInt64 = 1_000_000
    private let deadlines = Machine.Deadlines(queryTimeout: .milliseconds(500), stallThreshold: .milliseconds(100), maxInFlight: 20)
    private static let read = Machine.Command.prepared(name: "find", readOnly: true, resource: "tasks")
    private static let write = Machine.Command.prepared(name: "update", readOnly: false, resource: "tasks")
    private static let otherRead = Machine.Command.prepared(name: "settings", readOnly: true, resource: "settings")

    /// A machine that checks segments, its first check echoing 100.
    private func machine() -> Machine {
        var machine = Machine(deadlines: deadlines, firstCheckValue: 100)
        machine.startCheckingSegments()
        return machine
    }

    /// The actions in words, to compare whole sequences.
    private func words(_ actions: [Machine.Action]) -> [String] {
        actions.map { action in
            switch action {
            case .sendPrepare(let query): "prepare \(query)"
            case .sendExecute(let query): "execute \(query)"
            case .sendCheck(let value): "check \(value)"
            case .sendSync: "sync"
            case .scheduleSync: "schedule sync"
            case .flush: "flush"
            case .answer(let query, .success(let rows)): "answer \(query): \(rows ?? "no rows")"
            case .answer(let query, .failure(let error)): "answer \(query): \(error.kind)"
            case .cancel: "cancel"
            case .reportStall(.stalled(let resource)): "stalled on \(resource)"
            case .reportStall(.resumed): "resumed"
            case .close(let error): "close: \(error.kind)"
            }
        }
    }

    /// Feeds the results of one whole command.
    private func command(_ machine: inout Machine, _ result: Machine.Received) -> [String] {
        let actions = machine.received(result)
        machine.commandEnded()
        return words(actions)
    }

    /// Runs `command` once so that its statement is prepared: its PREPARE's segment checked by
    /// `firstEcho`, its execution's by the next number.
    private func warmUp(_ machine: inout Machine, _ command: Machine.Command, firstEcho: UInt64) {
        _ = machine.enqueue("warm-up", command, deadline: 1000 * Self.ms, now: 0)
        _ = machine.endOfTurn()
        _ = self.command(&machine, .prepared)
        _ = self.command(&machine, .echo(firstEcho))
        _ = machine.syncReceived()
        _ = self.command(&machine, .rows("warm-up"))
        _ = self.command(&machine, .echo(firstEcho + 1))
        _ = machine.syncReceived()
    }

    /// A machine whose statement for `command` is prepared, with `query` sent (and its turn
    /// over), its check echoing 102.
    private func sent(_ query: String, _ command: Machine.Command) -> Machine {
        var m = machine()
        warmUp(&m, command, firstEcho: 100)
        _ = m.enqueue(query, command, deadline: 1000 * Self.ms, now: 0)
        _ = m.endOfTurn()
        return m
    }

    @Test func aWriteIsPreparedInASegmentOfItsOwnAndAnsweredAtItsSync() {
        var m = machine()
        let sent = words(m.enqueue("w", Self.write, deadline: 1000 * Self.ms, now: 0))
        #expect(sent == ["prepare w", "check 100", "sync", "execute w", "check 101", "sync", "flush"])
        #expect(command(&m, .prepared) == [])
        #expect(command(&m, .echo(100)) == [])
        #expect(words(m.syncReceived()) == [])
        #expect(command(&m, .rows("UPDATE 1")) == [])  // not yet: its commit is confirmed by the sync
        #expect(command(&m, .echo(101)) == [])
        #expect(words(m.syncReceived()) == ["answer w: UPDATE 1"])
        // Prepared now: the next execution goes alone.
        #expect(words(m.enqueue("w2", Self.write, deadline: 1000 * Self.ms, now: 0)) == ["execute w2", "check 102", "sync", "flush"])
    }

    @Test func readsOfOneTurnShareOneSyncAndAreAnsweredWhenItsCheckPassed() {
        var m = machine()
        warmUp(&m, Self.read, firstEcho: 100)
        #expect(words(m.enqueue("a", Self.read, deadline: 1000 * Self.ms, now: 0)) == ["execute a", "schedule sync"])
        #expect(m.hasOpenReadBatch)
        #expect(words(m.enqueue("b", Self.read, deadline: 1000 * Self.ms, now: 0)) == ["execute b"])
        #expect(words(m.endOfTurn()) == ["check 102", "sync", "flush"])
        #expect(!m.hasOpenReadBatch)
        #expect(command(&m, .rows("A")) == [])
        #expect(command(&m, .rows("B")) == [])
        #expect(command(&m, .echo(102)) == [])
        #expect(words(m.syncReceived()) == ["answer a: A", "answer b: B"])
    }

    @Test func aFailedReadIsAnsweredAndTheReadsItSkippedRunAgain() {
        var m = machine()
        warmUp(&m, Self.read, firstEcho: 100)
        _ = m.enqueue("a", Self.read, deadline: 1000 * Self.ms, now: 0)
        _ = m.enqueue("b", Self.read, deadline: 1000 * Self.ms, now: 0)
        _ = m.endOfTurn()
        #expect(command(&m, .serverError(PostgresError(.server, "boom", sqlState: "XX000"))) == [])
        #expect(command(&m, .skipped) == [])
        #expect(command(&m, .skipped) == [])  // the check
        // The sync: a answered with its error, b sent again (it never ran).
        #expect(words(m.syncReceived()) == ["answer a: server", "execute b", "schedule sync"])
        #expect(words(m.endOfTurn()) == ["check 103", "sync", "flush"])
        #expect(command(&m, .rows("B")) == [])
        #expect(command(&m, .echo(103)) == [])
        #expect(words(m.syncReceived()) == ["answer b: B"])
    }

    @Test func executionsThatReliedOnACancelledPrepareFailWithItAndDoNotPoisonTheConnection() {
        // A PREPARE waits for a lock too (parsing opens the table) and is cancelled at its
        // deadline: every execution sent on the strength of it then finds no statement (26000).
        var m = machine()
        #expect(words(m.enqueue("a", Self.read, deadline: 1000 * Self.ms, now: 0)) == ["prepare a", "check 100", "sync", "execute a", "schedule sync", "flush"])
        #expect(words(m.endOfTurn()) == ["check 101", "sync", "flush"])
        #expect(words(m.enqueue("b", Self.read, deadline: 1000 * Self.ms, now: 0)) == ["execute b", "schedule sync"])
        #expect(words(m.endOfTurn()) == ["check 102", "sync", "flush"])
        let cancelled = PostgresError(.server, "canceling statement due to user request", sqlState: "57014")
        let missing = PostgresError(.server, "prepared statement \"find\" does not exist", sqlState: "26000")
        #expect(command(&m, .serverError(cancelled)) == [])
        #expect(command(&m, .skipped) == [])
        #expect(words(m.syncReceived()) == [])
        #expect(command(&m, .serverError(missing)) == [])
        #expect(command(&m, .skipped) == [])
        #expect(words(m.syncReceived()) == ["answer a: server"])
        #expect(command(&m, .serverError(missing)) == [], "b relied on the same PREPARE: no poisoning")
        #expect(command(&m, .skipped) == [])
        #expect(words(m.syncReceived()) == ["answer b: server"])
        #expect(m.isOpen)
        // The statement is prepared again for the next query.
        #expect(words(m.enqueue("c", Self.read, deadline: 1000 * Self.ms, now: 0)).first == "prepare c")
    }

    @Test func writesInFlightOnALostConnectionFailAndAreNeverSentAgain() {
        var m = machine()
        warmUp(&m, Self.write, firstEcho: 100)
        _ = m.enqueue("w1", Self.write, deadline: 1000 * Self.ms, now: 0)
        _ = m.enqueue("w2", Self.write, deadline: 1000 * Self.ms, now: 0)
        _ = command(&m, .rows("UPDATE 1"))  // w1 ran; its sync never comes
        #expect(words(m.fail(PostgresError(.connectionLost, "gone"))) == ["close: connectionLost", "answer w1: connectionLost", "answer w2: connectionLost"])
        #expect(!m.isOpen)
        #expect(words(m.enqueue("w3", Self.write, deadline: 1000 * Self.ms, now: 0)) == ["answer w3: connectionLost"])
        #expect(m.fail(PostgresError(.connectionLost, "again")).isEmpty)
    }

    @Test func answersOutOfTurnOrOutOfShapePoisonTheConnection() {
        // A result where a sync was due.
        var early = machine()
        _ = early.enqueue("w", Self.write, deadline: 1000 * Self.ms, now: 0)
        _ = command(&early, .prepared)
        _ = command(&early, .echo(100))
        #expect(command(&early, .rows("stray")) == ["close: protocolViolation", "answer w: protocolViolation"])

        // A check that echoes another segment's number: the write is not confirmed.
        var swapped = sent("w", Self.write)
        _ = command(&swapped, .rows("UPDATE 1"))
        #expect(command(&swapped, .echo(7)) == ["close: protocolViolation", "answer w: protocolViolation"])

        // A sync before the check it was promised.
        var unchecked = machine()
        _ = unchecked.enqueue("w", Self.write, deadline: 1000 * Self.ms, now: 0)
        _ = command(&unchecked, .prepared)
        #expect(words(unchecked.syncReceived()) == ["close: protocolViolation", "answer w: protocolViolation"])

        // Two results for one statement.
        var twice = sent("r", Self.read)
        #expect(words(twice.received(.rows("one"))) == [])
        #expect(words(twice.received(.rows("two"))) == ["close: protocolViolation", "answer r: protocolViolation"])

        // A write that "succeeded" in a segment whose check was skipped.
        var skipped = sent("w", Self.write)
        _ = command(&skipped, .rows("UPDATE 1"))
        _ = command(&skipped, .skipped)
        #expect(words(skipped.syncReceived()) == ["close: protocolViolation", "answer w: protocolViolation"])

        // A statement prepared here gone from the server.
        var gone = sent("r", Self.read)
        #expect(command(&gone, .serverError(PostgresError(.server, "no such statement", sqlState: "26000")))
            == ["close: protocolViolation", "answer r: protocolViolation"])
    }

    @Test func aQueryPastItsDeadlineIsAnsweredThenCancelledAndAnIgnoredCancelClosesTheConnection() {
        var m = machine()
        warmUp(&m, Self.write, firstEcho: 100)
        _ = m.enqueue("w", Self.write, deadline: 500 * Self.ms, now: 0)
        #expect(words(m.tick(now: 50 * Self.ms)) == [])
        #expect(words(m.tick(now: 150 * Self.ms)) == ["stalled on tasks"])
        #expect(words(m.tick(now: 500 * Self.ms)) == ["answer w: queryTimeout", "cancel"])
        #expect(words(m.tick(now: 600 * Self.ms)) == [])
        #expect(words(m.tick(now: 750 * Self.ms)) == ["cancel"])  // sent again after two stall thresholds
        #expect(words(m.tick(now: 1001 * Self.ms)) == ["close: queryTimeout", "resumed"])
    }

    @Test func aStallEndsWhenTheLastStatementInFlightIsAnswered() {
        var m = machine()
        warmUp(&m, Self.write, firstEcho: 100)
        _ = m.enqueue("slow", Self.write, deadline: 5000 * Self.ms, now: 0)
        #expect(words(m.tick(now: 150 * Self.ms)) == ["stalled on tasks"])
        _ = command(&m, .rows("UPDATE 1"))
        _ = command(&m, .echo(102))
        #expect(words(m.syncReceived()) == ["answer slow: UPDATE 1", "resumed"])
        #expect(words(m.tick(now: 300 * Self.ms)) == [])
    }

    @Test func aCancelSentForOneQueryDoesNotCountForTheNextInItsSlot() {
        var m = machine()
        warmUp(&m, Self.write, firstEcho: 100)
        _ = m.enqueue("w1", Self.write, deadline: 500 * Self.ms, now: 0)
        #expect(words(m.tick(now: 500 * Self.ms)).contains("cancel"))
        // The cancel lands: w1 fails, its segment ends, and it is forgotten.
        _ = command(&m, .serverError(PostgresError(.server, "canceling statement due to user request", sqlState: "57014")))
        _ = command(&m, .skipped)
        _ = m.syncReceived()
        m.progress(now: 600 * Self.ms)
        // The next query takes w1's slot; it gets its own full time, then its own cancel.
        _ = m.enqueue("w2", Self.write, deadline: 1200 * Self.ms, now: 600 * Self.ms)
        #expect(!words(m.tick(now: 1150 * Self.ms)).contains { $0.hasPrefix("close") || $0 == "cancel" })
        let atDeadline = words(m.tick(now: 1200 * Self.ms))
        #expect(atDeadline.contains("answer w2: queryTimeout") && atDeadline.contains("cancel"))
        #expect(m.isOpen)
    }

    @Test func aStalledConnectionReleasesItsReadsOnOtherResourcesButKeepsItsWrites() {
        var m = machine()
        warmUp(&m, Self.write, firstEcho: 100)
        warmUp(&m, Self.otherRead, firstEcho: 102)
        _ = m.enqueue("w", Self.write, deadline: 1000 * Self.ms, now: 0)
        _ = m.enqueue("s", Self.otherRead, deadline: 1000 * Self.ms, now: 0)
        _ = m.enqueue("w2", Self.write, deadline: 1000 * Self.ms, now: 0)
        #expect(words(m.tick(now: 101 * Self.ms)) == ["stalled on tasks", "answer s: stalled"])
        // Progress again: resumed, and the released read's late results are dropped.
        m.progress(now: 120 * Self.ms)
        #expect(words(m.tick(now: 130 * Self.ms)) == ["resumed"])
        #expect(command(&m, .rows("UPDATE 1")) == [])
        #expect(command(&m, .echo(104)) == [])
        #expect(words(m.syncReceived()) == ["answer w: UPDATE 1"])
    }

    @Test func theHeadOfAConnectionStalledBehindAnotherIsCancelled() {
        var m = machine()
        _ = m.enqueue("w", Self.write, deadline: 1000 * Self.ms, now: 0)
        #expect(words(m.cancelStalledHead(now: 10 * Self.ms)) == ["answer w: stalled", "cancel"])
        #expect(words(m.cancelStalledHead(now: 20 * Self.ms)) == [])
    }

    // MARK: Behind a transaction pooler

    /// A transaction-pooled machine that checks segments, its first check echoing 100.
    private func pooledMachine() -> Machine {
        var machine = Machine(deadlines: deadlines, transactionPooled: true, firstCheckValue: 100)
        machine.startCheckingSegments()
        return machine
    }

    @Test func behindATransactionPoolerNothingIsPreparedAndOneSegmentIsOnTheWireAtATime() {
        var m = pooledMachine()
        #expect(words(m.enqueue("w1", Self.write, deadline: 1000 * Self.ms, now: 0)) == ["execute w1", "check 100", "sync", "flush"])
        // Everything else waits for that segment's sync: the backend may change hands after it.
        #expect(words(m.enqueue("r1", Self.read, deadline: 1000 * Self.ms, now: 0)) == [])
        #expect(words(m.enqueue("w2", Self.write, deadline: 1000 * Self.ms, now: 0)) == [])
        #expect(words(m.enqueue("r2", Self.read, deadline: 1000 * Self.ms, now: 0)) == [])
        #expect(words(m.endOfTurn()) == [])
        #expect(command(&m, .rows("UPDATE 1")) == [])
        #expect(command(&m, .echo(100)) == [])
        // The first waiting query goes out; a write does not join the reads' segment.
        #expect(words(m.syncReceived()) == ["answer w1: UPDATE 1", "execute r1", "check 101", "sync", "flush"])
        #expect(command(&m, .rows("R1")) == [])
        #expect(command(&m, .echo(101)) == [])
        #expect(words(m.syncReceived()) == ["answer r1: R1", "execute w2", "check 102", "sync", "flush"])
        #expect(command(&m, .rows("UPDATE 1")) == [])
        #expect(command(&m, .echo(102)) == [])
        #expect(words(m.syncReceived()) == ["answer w2: UPDATE 1", "execute r2", "check 103", "sync", "flush"])
        #expect(command(&m, .rows("R2")) == [])
        #expect(command(&m, .echo(103)) == [])
        #expect(words(m.syncReceived()) == ["answer r2: R2"])
        // Idle again: the next read opens a batch at once.
        #expect(words(m.enqueue("r3", Self.read, deadline: 1000 * Self.ms, now: 0)) == ["execute r3", "schedule sync"])
    }

    @Test func behindATransactionPoolerWaitingReadsGoOutTogetherBehindOneSync() {
        var m = pooledMachine()
        _ = m.enqueue("a", Self.read, deadline: 1000 * Self.ms, now: 0)
        #expect(words(m.endOfTurn()) == ["check 100", "sync", "flush"])
        #expect(words(m.enqueue("b", Self.read, deadline: 1000 * Self.ms, now: 0)) == [])
        #expect(words(m.enqueue("c", Self.otherRead, deadline: 1000 * Self.ms, now: 0)) == [])
        #expect(command(&m, .rows("A")) == [])
        #expect(command(&m, .echo(100)) == [])
        #expect(words(m.syncReceived()) == ["answer a: A", "execute b", "execute c", "check 101", "sync", "flush"])
        #expect(command(&m, .rows("B")) == [])
        #expect(command(&m, .rows("C")) == [])
        #expect(command(&m, .echo(101)) == [])
        #expect(words(m.syncReceived()) == ["answer b: B", "answer c: C"])
    }

    @Test func behindATransactionPoolerAWriteClosesTheOpenReadBatchAndWaitsForIt() {
        var m = pooledMachine()
        #expect(words(m.enqueue("r", Self.read, deadline: 1000 * Self.ms, now: 0)) == ["execute r", "schedule sync"])
        #expect(words(m.enqueue("w", Self.write, deadline: 1000 * Self.ms, now: 0)) == ["check 100", "sync", "flush"])
        #expect(words(m.endOfTurn()) == [], "the batch is already closed")
        #expect(command(&m, .rows("R")) == [])
        #expect(command(&m, .echo(100)) == [])
        #expect(words(m.syncReceived()) == ["answer r: R", "execute w", "check 101", "sync", "flush"])
    }

    @Test func behindATransactionPoolerAQueryThatTimesOutWaitingIsNeverSent() {
        var m = pooledMachine()
        _ = m.enqueue("w", Self.write, deadline: 1000 * Self.ms, now: 0)
        _ = m.enqueue("late", Self.read, deadline: 50 * Self.ms, now: 0)
        _ = m.enqueue("next", Self.read, deadline: 1000 * Self.ms, now: 0)
        #expect(words(m.tick(now: 60 * Self.ms)) == ["answer late: queryTimeout"])
        #expect(command(&m, .rows("UPDATE 1")) == [])
        #expect(command(&m, .echo(100)) == [])
        #expect(words(m.syncReceived()) == ["answer w: UPDATE 1", "execute next", "check 101", "sync", "flush"])
    }

    @Test func behindATransactionPoolerAFailedConnectionAnswersTheWaitingQueries() {
        var m = pooledMachine()
        _ = m.enqueue("w", Self.write, deadline: 1000 * Self.ms, now: 0)
        _ = m.enqueue("r", Self.read, deadline: 1000 * Self.ms, now: 0)
        let actions = words(m.fail(PostgresError(.connectionLost, "gone")))
        #expect(actions == ["close: connectionLost", "answer w: connectionLost", "answer r: connectionLost"])
    }

    @Test func behindATransactionPoolerAStalledConnectionReleasesItsWaitingReads() {
        var m = pooledMachine()
        _ = m.enqueue("w", Self.write, deadline: 1000 * Self.ms, now: 0)
        _ = m.enqueue("r", Self.otherRead, deadline: 1000 * Self.ms, now: 0)
        _ = m.enqueue("w2", Self.write, deadline: 1000 * Self.ms, now: 0)
        #expect(words(m.tick(now: 150 * Self.ms)) == ["stalled on tasks", "answer r: stalled"])
        #expect(command(&m, .rows("UPDATE 1")) == [])
        #expect(command(&m, .echo(100)) == [])
        #expect(words(m.syncReceived()) == ["answer w: UPDATE 1", "execute w2", "check 101", "sync", "flush"])
    }

}

/// Which server errors a client is told to retry (503) rather than given a 500.
@Suite("Transient errors (pure)")
struct TransientErrorTests {
    @Test func aPrepareThatMetAPoolersLeftoverStatementIsTransient() {
        #expect(PostgresError(.server, "prepared statement \"x\" already exists", sqlState: "42P05").isTransient)
        #expect(PostgresError(.server, "terminating connection", sqlState: "57P01").isTransient)
        #expect(!PostgresError(.server, "duplicate key", sqlState: "23505").isTransient)
        #expect(!PostgresError(.server, "syntax error", sqlState: "42601").isTransient)
    }
}
