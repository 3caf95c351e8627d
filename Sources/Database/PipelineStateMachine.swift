import DequeModule

/// The pipeline protocol of one PostgreSQL connection, with no libpq and no clock of its own:
/// queries go in (`enqueue`), what the server answers goes in as it arrives (`received`,
/// `commandEnded`, `syncReceived`), the watchdog's ticks go in with the time; actions come out
/// (send this, flush, answer that query, cancel, report a stall, close). `PostgresConnection`
/// is the libpq glue around it; tests drive it by hand.
///
/// Statements between two syncs form one implicit transaction (a *segment*), so only read-only
/// statements share one: the reads issued during one turn of the loop go out together behind a
/// single sync. Every other statement gets a sync of its own and is answered only once that
/// sync arrives (when it has committed). A PREPARE also gets a sync of its own, so no other
/// statement's failure can undo it.
///
/// Once `startCheckingSegments()` has run, every segment ends with a check statement echoing a
/// number unique to that segment, and a segment's answers reach their callers only once its
/// check came back right. A result nobody asked for, a sync out of turn, a second result, a
/// check that does not echo its number or a session that is not the one set up *poisons* the
/// connection: it closes and everything in flight fails with `.protocolViolation`. In a segment
/// that failed part-way the errors are answered and the reads run again (nothing vouches for
/// their results); writes are never sent twice.
///
/// Behind a transaction pooler (PgBouncer's `pool_mode = transaction`) the backend may change
/// hands at every sync that leaves no transaction open, so such a connection
/// (`transactionPooled`) prepares nothing (each statement is parsed unnamed in its own segment)
/// and keeps one segment on the wire at a time: what is enqueued meanwhile waits, and goes out
/// when that segment's sync is back (waiting reads together, behind one sync).
///
/// Deadlines (nanoseconds on a monotonic clock the caller reads): a query past its deadline is
/// answered `.queryTimeout` and cancelled on the server; a connection whose work made no
/// progress for `stallThreshold` is reported stalled (its queued reads on other resources are
/// released to run elsewhere); one that ignores its cancels for a query timeout, or whose
/// backlog passes `maxInFlight`, is closed.
struct PipelineStateMachine<Query, Rows> {
    typealias QueryID = Int

    /// What a query runs: SQL without parameters, or a named prepared statement.
    enum Command: Equatable {
        case simple
        case prepared(name: String, readOnly: Bool, resource: String)

        var isReadOnly: Bool {
            if case .prepared(_, let readOnly, _) = self { return readOnly }
            return false
        }

        /// What the statement waits on when it blocks (see `PreparedStatement.resource`).
        var resource: String {
            if case .prepared(_, _, let resource) = self { return resource }
            return ""
        }

        var name: String {
            if case .prepared(let name, _, _) = self { return name }
            return "a simple query"
        }
    }

    struct Deadlines {
        var queryTimeout: Duration
        var stallThreshold: Duration
        /// Statements on the wire (answered or not) beyond which the connection is recycled.
        var maxInFlight: Int
    }

    /// A result the glue read, classified against `expected`.
    enum Received {
        /// The statement's rows (a result of its declared shape).
        case rows(Rows)
        case serverError(PostgresError)
        /// The server skipped the command: an earlier one in its segment failed.
        case skipped
        /// A PREPARE's completion.
        case prepared
        /// The number a segment check echoed.
        case echo(UInt64)
        /// A result that cannot be what was expected; the message says why.
        case violation(String)
    }

    /// What the server answers next.
    enum Expected {
        case prepare(Query)
        case execute(Query)
        case check
        case sync
        case nothing
    }

    enum Action {
        case sendPrepare(Query)
        case sendExecute(Query)
        case sendCheck(UInt64)
        case sendSync
        /// Send the open batch's sync once the loop's current turn is over (`endOfTurn`).
        case scheduleSync
        case flush
        /// Resume the query's caller: rows (nil: no rows at all) or an error.
        case answer(Query, Result<Rows?, PostgresError>)
        /// Ask the server to cancel what it runs.
        case cancel
        case reportStall(PostgresConnection.StallReport)
        /// The connection failed: free it now; tell the pool once the answers that follow are given.
        case close(PostgresError)
    }

    /// A query in flight. A class, so that the many small updates a query sees go to it in place
    /// (a struct in a dictionary was copied whole, with its strings and rows, on each).
    private final class Entry {
        let query: Query
        let command: Command
        let deadline: UInt64
        /// Unique for the connection's life (ids are reused).
        let serial: UInt64
        var answered = false
        /// Wire items and segment membership that refer to it; forgotten when answered and zero.
        var references = 0
        var preparedHere = false
        var prepareAnswered = false
        var prepareError: PostgresError?
        /// The number of the PREPARE its execution relies on.
        var preparation: Int?
        var resends = 0
        var skipped = false
        var rows: Rows?
        var error: PostgresError?

        init(query: Query, command: Command, deadline: UInt64, serial: UInt64) {
            self.query = query
            self.command = command
            self.deadline = deadline
            self.serial = serial
        }
    }

    /// The queries in flight by id: a slab whose free slots are reused (no hashing per lookup).
    private struct EntryTable {
        private var slots: [Entry?] = []
        private var free: [QueryID] = []

        subscript(id: QueryID) -> Entry? { id < slots.count ? slots[id] : nil }

        mutating func insert(_ entry: Entry) -> QueryID {
            if let id = free.popLast() {
                slots[id] = entry
                return id
            }
            slots.append(entry)
            return slots.count - 1
        }

        mutating func remove(_ id: QueryID) {
            slots[id] = nil
            free.append(id)
        }

        /// Every id in use, oldest slot first.
        var ids: [QueryID] { slots.indices.filter { slots[$0] != nil } }

        mutating func removeAll() {
            slots.removeAll()
            free.removeAll()
        }
    }

    private enum WireItem {
        case prepare(QueryID)
        case execute(QueryID)
        case check(UInt64)
        /// `checked`: a check was sent ahead of it.
        case sync(checked: Bool)

        var queryID: QueryID? {
            switch self {
            case .prepare(let id), .execute(let id): id
            case .check, .sync: nil
            }
        }
    }

    private enum SegmentCheck {
        case passed
        case skipped
    }

    /// How often one read is sent again after being skipped.
    static var maxResends: Int { 64 }
    /// A cancel for the same head statement is sent again after this many stall thresholds.
    static var cancelResendThresholds: UInt64 { 2 }
    /// A head statement that outlives this many query timeouts after its first cancel closes the
    /// connection (a cancel takes effect in milliseconds; one that does nothing for this long met
    /// an idle server whose answer went astray, and the connection serves no one).
    static var cancelGiveUpTimeouts: UInt64 { 1 }

    let deadlines: Deadlines
    private let queryTimeout: UInt64
    private let stallThreshold: UInt64
    private(set) var isOpen = true
    private var entries = EntryTable()
    /// What was sent and is not answered yet, in the order the answers will come.
    private var wire: Deque<WireItem> = []
    /// Executions of the current segment whose results are in; answered when its sync arrives.
    private var segment: [QueryID] = []
    private var segmentCheck: SegmentCheck?
    private var checksSegments = false
    /// The number the next segment's check echoes: random per connection, then counting.
    private var nextCheckValue: UInt64
    /// Statement names prepared (or being prepared) here, each with the number of the PREPARE
    /// that made it: a failure only undoes the entry its own PREPARE made.
    private var prepared: [String: Int] = [:]
    private var preparesSent = 0
    /// Read-only executions sent since the last sync.
    private var unsyncedReads = 0
    /// A result of the command at the head of the wire came in (its end is due next).
    private(set) var inCommand = false
    /// When bytes last arrived, or work arrived on an idle wire.
    private var lastProgress: UInt64 = 0
    private var isStalled = false
    /// The head query cancels were sent for, when the first and the last went.
    /// (By serial: a query's id is reused once it is forgotten, and a cancel sent for one query
    /// must not count as sent for the next query in its slot.)
    private var cancelSent: (serial: UInt64, first: UInt64, last: UInt64)?
    /// The serial the next query gets: unique for the connection's life.
    private var nextSerial: UInt64 = 0
    /// Behind a transaction pooler: nothing prepared, one segment on the wire at a time.
    let transactionPooled: Bool
    /// Syncs sent and not yet back.
    private var syncsOnWire = 0
    /// Queries waiting for the segment on the wire to end (transaction-pooled only), in order.
    private var waiting: Deque<QueryID> = []

    init(deadlines: Deadlines, transactionPooled: Bool = false, firstCheckValue: UInt64 = .random(in: .min ... .max)) {
        self.deadlines = deadlines
        self.transactionPooled = transactionPooled
        queryTimeout = nanoseconds(deadlines.queryTimeout)
        stallThreshold = nanoseconds(deadlines.stallThreshold)
        nextCheckValue = firstCheckValue
    }

    /// Segments end with the check statement from now on (it is prepared by then).
    mutating func startCheckingSegments() {
        checksSegments = true
    }

    /// Reads sent in this turn of the loop wait for their sync: another read joins them free.
    var hasOpenReadBatch: Bool { unsyncedReads > 0 }

    /// What the next result belongs to.
    var expected: Expected {
        switch wire.first {
        case .prepare(let id)?: .prepare(entries[id]!.query)
        case .execute(let id)?: .execute(entries[id]!.query)
        case .check?: .check
        case .sync?: .sync
        case nil: .nothing
        }
    }

    /// The first server error among the queries in flight (it may explain a lost connection).
    var firstServerError: PostgresError? {
        wire.lazy.compactMap { $0.queryID.flatMap { self.entries[$0]?.error } }.first
    }

    // MARK: Sending

    mutating func enqueue(_ query: Query, _ command: Command, deadline: UInt64, now: UInt64) -> [Action] {
        guard isOpen else { return [.answer(query, .failure(PostgresError(.connectionLost, "the connection is closed")))] }
        if wire.isEmpty { lastProgress = now }
        let id = entries.insert(Entry(query: query, command: command, deadline: deadline, serial: nextSerial))
        nextSerial += 1
        var actions: [Action] = []
        send(id, into: &actions)
        return actions
    }

    /// The loop's turn is over: the reads it sent go out behind one sync.
    mutating func endOfTurn() -> [Action] {
        guard isOpen, unsyncedReads > 0 else { return [] }
        var actions: [Action] = []
        syncPendingReads(into: &actions)
        actions.append(.flush)
        return actions
    }

    /// Puts a query on the wire: its PREPARE the first time its statement runs here (with a
    /// sync of its own), then its execution, then a sync: now, or for a read at the end of the
    /// loop's turn.
    private mutating func send(_ id: QueryID, into actions: inout [Action]) {
        guard let entry = entries[id] else { return }
        if transactionPooled {
            sendPooled(id, entry, into: &actions)
            return
        }
        switch entry.command {
        case .simple:
            syncPendingReads(into: &actions)
            put(.execute(id), .sendExecute(entry.query), into: &actions)
            sync(into: &actions)
        case .prepared(let name, let readOnly, _):
            if prepared[name] == nil {
                syncPendingReads(into: &actions)
                put(.prepare(id), .sendPrepare(entry.query), into: &actions)
                sync(into: &actions)
                preparesSent += 1
                prepared[name] = preparesSent
                entry.preparedHere = true
                entry.prepareAnswered = false
                entry.prepareError = nil
            }
            entry.preparation = prepared[name]
            if readOnly {
                put(.execute(id), .sendExecute(entry.query), into: &actions)
                unsyncedReads += 1
                if unsyncedReads == 1 { actions.append(.scheduleSync) }
                if !entry.preparedHere { return }  // `endOfTurn` flushes
            } else {
                syncPendingReads(into: &actions)
                put(.execute(id), .sendExecute(entry.query), into: &actions)
                sync(into: &actions)
            }
        }
        actions.append(.flush)
    }

    /// `send` behind a transaction pooler: the query waits while a segment is on the wire; a read
    /// opens a batch that this turn's reads join, anything else is a segment of its own.
    private mutating func sendPooled(_ id: QueryID, _ entry: Entry, into actions: inout [Action]) {
        if !entry.command.isReadOnly && unsyncedReads > 0 {
            syncPendingReads(into: &actions)  // the reads' segment goes first; the write waits for it
            actions.append(.flush)
        }
        guard syncsOnWire == 0 else {
            entry.references += 1
            waiting.append(id)
            return
        }
        put(.execute(id), .sendExecute(entry.query), into: &actions)
        if entry.command.isReadOnly {
            unsyncedReads += 1
            if unsyncedReads == 1 { actions.append(.scheduleSync) }
            return  // `endOfTurn` syncs and flushes
        }
        sync(into: &actions)
        actions.append(.flush)
    }

    /// Behind a transaction pooler, once the wire is clear: the first waiting query goes out,
    /// and when it is a read, the reads waiting after it join its segment (and any read sent
    /// again already in it).
    private mutating func sendWaiting(into actions: inout [Action]) {
        guard transactionPooled, syncsOnWire == 0 else { return }
        var batchOpen = unsyncedReads > 0
        while let id = waiting.first {
            guard let entry = entries[id], !entry.answered else {  // timed out or released while waiting
                waiting.removeFirst()
                release(id)
                continue
            }
            if batchOpen && !entry.command.isReadOnly { break }  // after the reads' segment
            waiting.removeFirst()
            entry.references -= 1
            put(.execute(id), .sendExecute(entry.query), into: &actions)
            if !entry.command.isReadOnly {
                sync(into: &actions)
                actions.append(.flush)
                return
            }
            batchOpen = true
        }
        if batchOpen {
            unsyncedReads = 0
            sync(into: &actions)
            actions.append(.flush)
        }
    }

    private mutating func put(_ item: WireItem, _ action: Action, into actions: inout [Action]) {
        if let id = item.queryID { entries[id]?.references += 1 }
        wire.append(item)
        actions.append(action)
    }

    /// Ends the current segment with its check and a sync.
    private mutating func sync(into actions: inout [Action]) {
        if checksSegments {
            let value = nextCheckValue
            nextCheckValue &+= 1
            put(.check(value), .sendCheck(value), into: &actions)
        }
        put(.sync(checked: checksSegments), .sendSync, into: &actions)
        syncsOnWire += 1
    }

    /// Closes the batch of reads sent so far, if any.
    private mutating func syncPendingReads(into actions: inout [Action]) {
        guard unsyncedReads > 0 else { return }
        unsyncedReads = 0
        sync(into: &actions)
    }

    // MARK: Receiving

    /// Bytes arrived: a statement sending rows is moving, even before its result is whole.
    mutating func progress(now: UInt64) {
        lastProgress = now
    }

    /// A result of the command at the head of the wire.
    mutating func received(_ result: Received) -> [Action] {
        guard isOpen else { return [] }
        inCommand = true
        switch wire.first {
        case .check(let value)?:
            guard segmentCheck == nil else { return poison("a second result for the segment check") }
            switch result {
            case .skipped: segmentCheck = .skipped
            case .echo(let echoed) where echoed == value: segmentCheck = .passed
            case .echo(let echoed): return poison("the segment check echoed \(echoed), not \(value)")
            case .violation(let what): return poison(what)
            case .rows, .serverError, .prepared: return poison("a result other than an echo for the segment check")
            }
        case .prepare(let id)?:
            guard !entries[id]!.prepareAnswered else { return poison("a second result for a PREPARE") }
            entries[id]!.prepareAnswered = true
            switch result {
            case .prepared: break
            case .serverError(let error): entries[id]!.prepareError = error
            case .skipped: entries[id]!.prepareError = PostgresError(.connectionLost, "the PREPARE was skipped")
            case .violation(let what): return poison(what)
            case .rows, .echo: return poison("a result other than a completion for a PREPARE")
            }
        case .execute(let id)?:
            let entry = entries[id]!
            if case .skipped = result {
                entries[id]!.skipped = true
                return []
            }
            guard entry.rows == nil && entry.error == nil else { return poison("a second result for \(entry.command.name)") }
            switch result {
            case .rows(let rows): entries[id]!.rows = rows
            case .serverError(let error):
                entries[id]!.error = error
                if let violation = sessionViolation(error, entry) { return poison(violation) }
            case .violation(let what): return poison(what)
            case .skipped, .prepared, .echo: return poison("a result of another kind for \(entry.command.name)")
            }
        case .sync?, nil:
            if case .violation(let what) = result { return poison(what) }
            return poison("a result that nobody asked for")
        }
        return []
    }

    /// The command at the head of the wire has all its results.
    mutating func commandEnded() {
        inCommand = false
        guard let item = wire.popFirst() else { return }
        switch item {
        case .prepare(let id):
            // A PREPARE that failed (or was cancelled) left nothing prepared.
            if let error = entries[id]!.prepareError, case .prepared(let name, _, _) = entries[id]!.command {
                if error.sqlState == "42P05" {
                    entries[id]!.prepareError = nil  // it exists already: as good as prepared
                } else {
                    if prepared[name] == entries[id]!.preparation { prepared[name] = nil }
                    failDependents(of: entries[id]!.preparation, with: error)
                }
            }
            release(id)
        case .execute(let id):
            if !entries[id]!.answered {  // else timed out: its results are dropped
                segment.append(id)
                entries[id]!.references += 1
            }
            release(id)
        case .check, .sync:
            break
        }
    }

    /// Executions sent on the strength of a PREPARE that then failed find no statement (26000):
    /// they carry its error, which is their answer, rather than a sign of a foreign session.
    private mutating func failDependents(of preparation: Int?, with error: PostgresError) {
        guard let preparation else { return }
        for item in wire {
            guard case .execute(let id) = item, let entry = entries[id], entry.preparation == preparation,
                  entry.prepareError == nil else { continue }
            entry.prepareError = error
        }
    }

    /// A sync arrived: the segment it closes is over.
    mutating func syncReceived() -> [Action] {
        guard isOpen else { return [] }
        guard !inCommand, case .sync(let checked)? = wire.first else {
            return poison("a sync where \(describe(wire.first)) was expected")
        }
        wire.removeFirst()
        syncsOnWire -= 1
        var actions = segmentEnded(checked: checked)
        if isOpen { sendWaiting(into: &actions) }
        // Nothing left in flight: a stall is over now, not at the watchdog's next tick (until then
        // the pool would keep the connection out of use).
        if isOpen && isStalled && wire.isEmpty {
            isStalled = false
            actions.append(.reportStall(.resumed))
        }
        return actions
    }

    /// Answers the segment's statements if its check (when `checked`) came back right. In a
    /// segment that failed part-way (check skipped) the errors are answered, and the reads that
    /// succeeded or were skipped run again: nothing vouches for their results.
    private mutating func segmentEnded(checked: Bool) -> [Action] {
        let check = segmentCheck
        segmentCheck = nil
        if checked {
            // Poisoned with the segment intact, so that every query in it is answered.
            guard let check else { return poison("a sync without its segment check") }
            if check == .skipped, segment.contains(where: { entries[$0].map { !$0.command.isReadOnly && !$0.skipped && $0.error == nil } ?? false }) {
                return poison("a write succeeded in a segment whose check was skipped")
            }
        }
        let ids = segment
        segment.removeAll()
        let verified = !checked || check == .passed
        var actions: [Action] = []
        var again: [QueryID] = []
        for id in ids {
            guard let entry = entries[id] else { continue }
            if entry.error != nil || (verified && !entry.skipped) {
                finish(id, into: &actions)
            } else if entry.command.isReadOnly {
                again.append(id)  // skipped, or its result is not vouched for: it runs again
            } else {
                answer(id, .failure(PostgresError(.connectionLost, "the server skipped the statement")), into: &actions)
            }
        }
        for id in ids { release(id) }
        // Sent again only now: before this sync, the server would skip them again at once.
        for id in again where entries[id]?.answered == false {
            entries[id]!.skipped = false
            entries[id]!.rows = nil
            entries[id]!.error = nil
            entries[id]!.resends += 1
            if entries[id]!.resends > Self.maxResends {
                answer(id, .failure(PostgresError(.connectionLost, "a read was skipped \(Self.maxResends) times by failures before it")), into: &actions)
            } else {
                send(id, into: &actions)
            }
        }
        return actions
    }

    /// An error that says the session is not the one this connection set up: a statement
    /// prepared here is gone (a pooler handed over another backend, or DISCARD ALL ran), or the
    /// session sits in a failed transaction (this connection never lets a statement run inside
    /// one: a transaction's body stops at its first error and rolls back).
    private func sessionViolation(_ error: PostgresError, _ entry: Entry) -> String? {
        switch error.sqlState {
        case "26000" where entry.prepareError == nil: "\(entry.command.name) prepared on this connection is gone from the server"
        case "25P02": "the session is inside a failed transaction this connection did not leave it in"
        default: nil
        }
    }

    // MARK: Deadlines

    /// The watchdog's tick: answers the queries past their deadline, reports a change in
    /// stalling, cancels a head statement past its deadline, and closes a connection that
    /// ignores its cancels or whose backlog grew past `maxInFlight`.
    mutating func tick(now: UInt64) -> [Action] {
        guard isOpen else { return [] }
        var actions: [Action] = []
        let timeout = PostgresError(.queryTimeout, "no answer from PostgreSQL within \(deadlines.queryTimeout)")
        for id in wire.lazy.compactMap(\.queryID) + segment + waiting {
            guard let entry = entries[id], !entry.answered, entry.deadline <= now else { continue }
            answer(id, .failure(timeout), into: &actions)
        }
        let head = wire.lazy.compactMap(\.queryID).first
        let stalled = !wire.isEmpty && now &- lastProgress > stallThreshold
        if stalled != isStalled {
            isStalled = stalled
            actions.append(.reportStall(stalled ? .stalled(resource: head.flatMap { entries[$0]?.command.resource } ?? "") : .resumed))
            if stalled, let head { releaseReads(behind: head, into: &actions) }
        }
        guard let head, let entry = entries[head] else { return actions }
        if let sent = cancelSent, sent.serial == entry.serial {
            // A cancel that arrived between two statements cancels nothing: send it again every
            // few stall thresholds; a connection that ignores them all is closed.
            if now &- sent.first > Self.cancelGiveUpTimeouts * queryTimeout {
                return actions + fail(PostgresError(.queryTimeout, "PostgreSQL ignored its cancel requests"))
            }
            if now &- sent.last > Self.cancelResendThresholds * stallThreshold { actions += cancel(head, now: now) }
        } else if entry.deadline <= now {
            actions += cancel(head, now: now)
        }
        if wire.count + waiting.count > deadlines.maxInFlight {
            return actions + fail(PostgresError(.queryTimeout, "\(wire.count + waiting.count) statements in flight on a stalled connection"))
        }
        return actions
    }

    /// Answers `.stalled` the reads queued behind a blocked head that wait on something else:
    /// they have not run, so the pool runs them again elsewhere (their results here, if any
    /// come, are dropped). Writes stay: they may still commit, and are never sent twice.
    private mutating func releaseReads(behind head: QueryID, into actions: inout [Action]) {
        let resource = entries[head]?.command.resource ?? ""
        for id in wire.lazy.compactMap(\.queryID) + waiting where id != head {
            guard let entry = entries[id], entry.command.isReadOnly, entry.command.resource != resource else { continue }
            answer(id, .failure(PostgresError(.stalled, "queued behind a blocked statement on \(resource)")), into: &actions)
        }
        // Reads of the head's segment that ran before it: their results wait for a check that
        // comes only after the blocked statement, so they run again elsewhere instead.
        for id in segment where entries[id]?.command.isReadOnly == true {
            answer(id, .failure(PostgresError(.stalled, "its segment waits behind a blocked statement on \(resource)")), into: &actions)
        }
    }

    /// The pool found another connection stalled behind the same resource: the head statement
    /// here is answered `.stalled` and cancelled, so this connection serves again.
    mutating func cancelStalledHead(now: UInt64) -> [Action] {
        guard isOpen, let head = wire.lazy.compactMap(\.queryID).first, let entry = entries[head] else { return [] }
        var actions: [Action] = []
        answer(head, .failure(PostgresError(.stalled, "PostgreSQL is not answering statements on \(entry.command.resource)")), into: &actions)
        if cancelSent?.serial != entry.serial { actions += cancel(head, now: now) }
        return actions
    }

    /// Asks the server to cancel what it is running (the head statement, unless it finished in
    /// the meantime: then the next one, which fails with 57014 and is answered like a timeout).
    private mutating func cancel(_ head: QueryID, now: UInt64) -> [Action] {
        guard let serial = entries[head]?.serial else { return [] }
        let first = cancelSent.flatMap { $0.serial == serial ? $0.first : nil } ?? now
        cancelSent = (serial, first, now)
        return [.cancel]
    }

    // MARK: Answers and failure

    /// Answers a query with its rows or its first error.
    private mutating func finish(_ id: QueryID, into actions: inout [Action]) {
        guard let entry = entries[id] else { return }
        if let error = entry.prepareError {
            answer(id, .failure(error), into: &actions)  // its execution failed for want of the statement
        } else if let error = entry.error {
            answer(id, .failure(error), into: &actions)
        } else {
            answer(id, .success(entry.rows), into: &actions)
        }
    }

    /// Answers a query once; a later answer (results after a timeout) is dropped.
    private mutating func answer(_ id: QueryID, _ result: Result<Rows?, PostgresError>, into actions: inout [Action]) {
        guard let entry = entries[id], !entry.answered else { return }
        entry.answered = true
        entry.rows = nil
        actions.append(.answer(entry.query, result))
        if entry.references == 0 { entries.remove(id) }
    }

    /// One reference to the query fewer; an answered query nothing refers to is forgotten.
    private mutating func release(_ id: QueryID) {
        guard let entry = entries[id] else { return }
        entry.references -= 1
        if entry.references <= 0 && entry.answered { entries.remove(id) }
    }

    /// The connection answered out of turn or out of shape: nothing it answered in this segment
    /// reaches a caller.
    private mutating func poison(_ what: String) -> [Action] {
        fail(PostgresError(.protocolViolation, what))
    }

    /// The connection is gone (or must go): every query still unanswered fails with `error` (a
    /// server error that came first says more, unless the connection was poisoned: then nothing
    /// it sent is believed).
    mutating func fail(_ error: PostgresError) -> [Action] {
        guard isOpen else { return [] }
        isOpen = false
        var actions: [Action] = [.close(error)]
        var order = segment
        order.append(contentsOf: wire.lazy.compactMap(\.queryID))
        for id in order {
            guard let entry = entries[id], !entry.answered else { continue }
            let cause = error.kind == .protocolViolation ? nil : entry.error
            answer(id, .failure(PostgresError(error.kind, cause?.message ?? error.message, sqlState: cause?.sqlState)), into: &actions)
        }
        // Queries not on the wire (none, unless a send failed half-way) are answered too.
        for id in entries.ids where entries[id]?.answered == false {
            answer(id, .failure(error), into: &actions)
        }
        wire.removeAll()
        segment.removeAll()
        waiting.removeAll()
        syncsOnWire = 0
        entries.removeAll()
        segmentCheck = nil
        unsyncedReads = 0
        if isStalled {
            isStalled = false
            actions.append(.reportStall(.resumed))
        }
        return actions
    }

    /// For a log line: what was expected where something else came.
    private func describe(_ item: WireItem?) -> String {
        switch item {
        case .prepare(let id)?: "the PREPARE of \(entries[id]?.command.name ?? "a statement")"
        case .execute(let id)?: "a result of \(entries[id]?.command.name ?? "a statement")"
        case .check?: "the segment check"
        case .sync?: "a sync"
        case nil: "nothing"
        }
    }
}

/// A non-negative `Duration` in nanoseconds.
func nanoseconds(_ duration: Duration) -> UInt64 {
    let (seconds, attoseconds) = duration.components
    return UInt64(max(0, seconds)) * 1_000_000_000 + UInt64(max(0, attoseconds) / 1_000_000_000)
}
