import DequeModule

/// The connection pool's decisions, with no I/O and no clock of its own: events go in (a lease
/// is requested, a connection opened, failed, came back or closed, the timer fired), actions come
/// out (lease this connection to that waiter, fail a waiter, open or close a connection). Time is
/// whatever `Duration` since an origin the caller passes, so tests drive it by hand.
///
/// Two kinds of lease: *exclusive* (a whole idle connection, for transactions) and *shared*
/// (one single-statement query pipelined with up to `maxSharedPerConnection - 1` others on the
/// same connection).
///
/// Connections are spread over `affinityGroups` groups (the event loops they run on); a lease
/// that names its caller's group gets a connection of that group when one is free, so the
/// query and its caller stay on one thread.
///
/// A connection reported *stalled* (its statements stopped making progress: a lock, a hung
/// backend) gets no new work. The first one stalled behind a resource (a table) takes, up to
/// its pipeline depth, the further statements on that resource, which would only block
/// elsewhere too; beyond that, while it is still stalled, they fail at once with `.stalled`
/// (once it moves again they are placed as usual). A second connection stalled
/// behind the same resource is told to cancel its head statement, so it serves again.
struct PoolStateMachine {
    typealias ConnectionID = Int
    typealias WaiterID = Int

    struct Configuration: Sendable {
        /// Most connections open (or opening) at once.
        var maxConnections: Int
        /// Connections kept open even when idle, so that a dead database is noticed.
        var minConnections: Int
        /// Most requests waiting for a connection; beyond that, an immediate `.poolQueueFull`.
        var maxWaiters: Int
        /// Longest a request waits before `.poolTimeout`.
        var acquireTimeout: Duration
        /// Most shared leases (pipelined queries) one connection carries at once.
        var maxSharedPerConnection: Int
        /// The same for a lookup (a one-row read, `lookup:` in `leaseRequested`): a connection
        /// takes lookups up to this many leases, so that many concurrent lookups are pipelined
        /// rather than queued for the pool (at least `maxSharedPerConnection`).
        var maxLookupsPerConnection: Int = 0
        /// First reconnect delay after a failed connect; doubles per failure up to `maxBackoff`.
        var initialBackoff: Duration
        var maxBackoff: Duration
        /// How many groups (event loops) connections are spread over.
        var affinityGroups: Int = 1
        /// How long a resource stays quarantined on one connection after its last stall there.
        var quarantineHold: Duration = .seconds(1)
    }

    enum LeaseKind: Equatable {
        case exclusive
        /// Pipelined with other shared leases: a read.
        case shared
        /// Pipelined with other shared leases: a statement that writes, whose sync waits for its
        /// commit. Reads stay off a connection carrying one while another has room, so they do
        /// not queue behind a WAL flush.
        case sharedWrite

        var isShared: Bool { self != .exclusive }
    }

    enum Action: Equatable {
        case lease(ConnectionID, to: WaiterID, waited: Duration)
        case fail(WaiterID, PostgresError)
        case connect(ConnectionID)
        case close(ConnectionID)
        /// Answer the connection's head statement `.stalled` and cancel it on the server.
        case cancelHead(ConnectionID)
    }

    private enum ConnectionState: Equatable {
        case connecting
        case idle
        case leased
        /// Carrying this many shared leases (at least one).
        case shared(Int)

        var isShared: Bool {
            if case .shared = self { return true }
            return false
        }
    }

    private struct Waiter {
        let id: WaiterID
        let kind: LeaseKind
        let enqueuedAt: Duration
        let deadline: Duration
    }

    let configuration: Configuration
    private var connections: [ConnectionID: ConnectionState] = [:]
    /// Shared write leases each connection carries (absent when none).
    private var writes: [ConnectionID: Int] = [:]
    /// The group each connection was placed in (entries of closed connections are pruned lazily).
    private var groups: [ConnectionID: Int] = [:]
    /// Connections reported stalled, with the resource they are stalled behind.
    private var stalled: [ConnectionID: String] = [:]
    /// Per resource, the connection that takes its further statements while it is blocked,
    /// and until when (renewed by each stall behind it): other statements stay off it.
    private var quarantine: [String: (connection: ConnectionID, until: Duration)] = [:]
    /// Idle connections, most recently used last (reused first: warm caches, fewer idle timeouts).
    private var idle: [ConnectionID] = []
    private var waiters: Deque<Waiter> = []
    private var nextConnectionID = 0
    /// Connect attempts that failed in a row; nonzero means the database looks unreachable.
    private var consecutiveFailures = 0
    private var lastFailure: PostgresError?
    /// When the next reconnect attempt is due while backing off.
    private var reconnectAt: Duration?
    private var shuttingDown = false

    init(configuration: Configuration) {
        self.configuration = configuration
    }

    // MARK: Queries

    var openCount: Int { connections.count - connectingCount }
    var connectingCount: Int {
        var count = 0
        for state in connections.values where state == .connecting { count += 1 }
        return count
    }
    /// Connections lent out, exclusively or shared.
    var leasedCount: Int {
        var count = 0
        for state in connections.values where state == .leased || state.isShared { count += 1 }
        return count
    }
    var idleCount: Int { idle.count }
    var stalledCount: Int { stalled.count }
    var waiterCount: Int { waiters.count }
    /// False while connects fail and no connection is open (requests then fail fast).
    var isReachable: Bool { !isDown && !shuttingDown }
    /// True once shut down and every connection has been closed.
    var isShutDownComplete: Bool { shuttingDown && connections.isEmpty }

    /// The earliest moment something is due: a waiter's deadline or a reconnect.
    var nextDeadline: Duration? {
        ([waiters.first?.deadline, reconnectAt].compactMap { $0 } + quarantine.values.map(\.until)).min()
    }

    private var isDown: Bool { consecutiveFailures > 0 && openCount == 0 }

    // MARK: Events

    /// Starts the pool: opens the minimum connections.
    mutating func start() -> [Action] {
        var actions: [Action] = []
        openConnectionsIfNeeded(&actions)
        return actions
    }

    /// The group connection `id` runs in (0 when it is unknown).
    func group(of id: ConnectionID) -> Int { groups[id] ?? 0 }

    /// A request for a connection; `group` is the caller's group when it runs in one.
    /// `resource` is what the statement waits on when it blocks (see `PreparedStatement.resource`);
    /// `avoiding`, a connection the caller just found stalled (before the pool heard of it).
    /// `lookup`: a one-row read, which may go deeper into a connection's pipeline.
    mutating func leaseRequested(
        _ waiter: WaiterID, kind: LeaseKind = .exclusive, group: Int? = nil, openBatch: ConnectionID? = nil,
        resource: String? = nil, avoiding: ConnectionID? = nil, lookup: Bool = false, now: Duration
    ) -> [Action] {
        if shuttingDown { return [.fail(waiter, PostgresError(.poolClosed, "the connection pool is shutting down"))] }
        if kind.isShared, let resource, let held = quarantine[resource] {
            if held.until <= now {
                quarantine[resource] = nil
            } else if held.connection != avoiding {
                // Statements on a blocked resource go behind the one blocked already, not elsewhere.
                var blocked: ConnectionID? = held.connection
                switch connections[held.connection] {
                case .shared(let count) where count < configuration.maxSharedPerConnection:
                    connections[held.connection] = .shared(count + 1)
                case .idle:
                    idle.removeAll { $0 == held.connection }
                    connections[held.connection] = .shared(1)
                default:
                    blocked = nil
                }
                if let blocked {
                    countWrite(kind, on: blocked)
                    return [.lease(blocked, to: waiter, waited: .zero)]
                }
                // Full: while it is still stalled, more would only block elsewhere too; once
                // it moves again (a pause that was no lock), the statement is placed as usual.
                if stalled[held.connection] != nil {
                    return [.fail(waiter, PostgresError(.stalled, "PostgreSQL is not answering statements on \(resource)"))]
                }
            }
        }
        let cap = kind == .shared && lookup ? max(configuration.maxSharedPerConnection, configuration.maxLookupsPerConnection) : configuration.maxSharedPerConnection
        if waiters.isEmpty,
           let connection = joinableBatch(openBatch, for: kind, cap: cap) ?? bestConnection(for: kind, group: group, avoiding: avoiding, cap: cap) {
            if case .shared(let count) = connections[connection] {
                connections[connection] = .shared(count + 1)
            } else {
                idle.removeAll { $0 == connection }
                connections[connection] = kind.isShared ? .shared(1) : .leased
            }
            countWrite(kind, on: connection)
            return [.lease(connection, to: waiter, waited: .zero)]
        }
        if isDown {
            let reason = lastFailure.map { ": \($0.message)" } ?? ""
            return [.fail(waiter, PostgresError(.unavailable, "the database is unreachable\(reason)"))]
        }
        guard waiters.count < configuration.maxWaiters else {
            return [.fail(waiter, PostgresError(.poolQueueFull, "\(waiters.count) requests are already waiting for a connection"))]
        }
        waiters.append(Waiter(id: waiter, kind: kind, enqueuedAt: now, deadline: now + configuration.acquireTimeout))
        var actions: [Action] = []
        openConnectionsIfNeeded(&actions)
        return actions
    }

    /// A waiting request was cancelled: it leaves the queue (the caller fails it).
    mutating func waiterCancelled(_ waiter: WaiterID) -> Bool {
        guard let index = waiters.firstIndex(where: { $0.id == waiter }) else { return false }
        waiters.remove(at: index)
        return true
    }

    /// Allocates an id for a connection about to be opened by `.connect`, in the group that has
    /// the fewest connections.
    private mutating func newConnection() -> ConnectionID {
        let id = nextConnectionID
        nextConnectionID += 1
        groups = groups.filter { connections[$0.key] != nil }
        var sizes = Array(repeating: 0, count: max(1, configuration.affinityGroups))
        for group in groups.values { sizes[group] += 1 }
        groups[id] = sizes.indices.min { sizes[$0] < sizes[$1] } ?? 0
        connections[id] = .connecting
        return id
    }

    mutating func connectSucceeded(_ connection: ConnectionID, now: Duration) -> [Action] {
        guard connections[connection] == .connecting else {
            return [.close(connection)]  // not ours to use (an impossible event): closed, never lent
        }
        consecutiveFailures = 0
        lastFailure = nil
        reconnectAt = nil
        if shuttingDown {
            connections[connection] = nil
            return [.close(connection)]
        }
        var actions: [Action] = []
        hand(connection, now: now, to: &actions)
        openConnectionsIfNeeded(&actions)
        return actions
    }

    mutating func connectFailed(_ connection: ConnectionID, error: PostgresError, now: Duration) -> [Action] {
        guard connections[connection] == .connecting else { return [] }
        connections[connection] = nil
        consecutiveFailures += 1
        lastFailure = error
        var actions: [Action] = []
        if shuttingDown { return actions }
        if isDown {
            while let waiter = waiters.popFirst() {
                actions.append(.fail(waiter.id, PostgresError(.unavailable, "the database is unreachable: \(error.message)")))
            }
        }
        let exponent = min(consecutiveFailures - 1, 16)
        let backoff = min(configuration.initialBackoff * (1 << exponent), configuration.maxBackoff)
        reconnectAt = now + backoff
        return actions
    }

    /// A connection's statements stopped making progress, behind a statement on `resource`.
    mutating func connectionStalled(_ connection: ConnectionID, resource: String, now: Duration) -> [Action] {
        guard connections[connection] != nil else { return [] }
        stalled[connection] = resource
        // Only a pipelining connection can take others' statements; a transaction's is just kept out.
        guard !resource.isEmpty, case .shared = connections[connection] else { return [] }
        let until = now + configuration.quarantineHold
        if let held = quarantine[resource], held.connection != connection, held.until > now, connections[held.connection] != nil {
            return [.cancelHead(connection)]
        }
        quarantine[resource] = (connection, until)
        return []
    }

    /// True while `connection` takes a blocked resource's statements (others stay off it).
    private func isQuarantineHolder(_ connection: ConnectionID) -> Bool {
        quarantine.values.contains { $0.connection == connection }
    }

    /// A stalled connection made progress again; it takes waiting shared leases if it has room.
    mutating func connectionResumed(_ connection: ConnectionID, now: Duration) -> [Action] {
        guard stalled.removeValue(forKey: connection) != nil else { return [] }
        var actions: [Action] = []
        guard case .shared(var count) = connections[connection], !shuttingDown else { return actions }
        if isQuarantineHolder(connection) {
            // Still the blocked resource's: it takes no one else's work until the hold ends.
            if count == 0 {
                connections[connection] = .idle
                idle.append(connection)
            }
            return actions
        }
        while count < configuration.maxSharedPerConnection, let first = waiters.first, first.kind.isShared {
            waiters.removeFirst()
            count += 1
            countWrite(first.kind, on: connection)
            actions.append(.lease(connection, to: first.id, waited: now - first.enqueuedAt))
        }
        if count == 0 {
            hand(connection, now: now, to: &actions)
        } else {
            connections[connection] = .shared(count)
        }
        return actions
    }

    /// Drops what is kept about a connection that closed.
    private mutating func forget(_ connection: ConnectionID) {
        writes[connection] = nil
        stalled[connection] = nil
        for (resource, held) in quarantine where held.connection == connection { quarantine[resource] = nil }
    }

    /// A lease ended. A connection that broke during the lease (`reusable == false`) is closed
    /// and replaced if anyone needs it.
    mutating func connectionReleased(_ connection: ConnectionID, kind: LeaseKind = .exclusive, reusable: Bool, now: Duration) -> [Action] {
        guard let state = connections[connection] else {
            // A shared connection that broke was already dropped by its first holder's release.
            return []
        }
        if kind == .sharedWrite, let count = writes[connection] {
            writes[connection] = count > 1 ? count - 1 : nil
        }
        var actions: [Action] = []
        if !reusable {
            connections[connection] = nil
            forget(connection)
            actions.append(.close(connection))
            openConnectionsIfNeeded(&actions)
            return actions
        }
        switch state {
        case .leased, .shared(1):
            if shuttingDown {
                connections[connection] = nil
                forget(connection)
                actions.append(.close(connection))
                return actions
            }
            if stalled[connection] != nil {
                // Stalled: kept out of use (not idle) until it resumes or closes.
                connections[connection] = .shared(0)
                return actions
            }
            if isQuarantineHolder(connection) {
                connections[connection] = .idle  // idle, but lent only for its blocked resource
                idle.append(connection)
                return actions
            }
            hand(connection, now: now, to: &actions)
        case .shared(let count) where count > 1:
            connections[connection] = .shared(count - 1)
            if let first = waiters.first, first.kind.isShared, !shuttingDown, stalled[connection] == nil, !isQuarantineHolder(connection) {
                waiters.removeFirst()
                addSharedLease(connection)
                countWrite(first.kind, on: connection)
                actions.append(.lease(connection, to: first.id, waited: now - first.enqueuedAt))
            }
        case .idle, .connecting, .shared:
            // Released more often than leased (a bug, or a connection reused across a close):
            // drop the connection rather than trust the count, and never stop the process.
            connections[connection] = nil
            idle.removeAll { $0 == connection }
            forget(connection)
            actions.append(.close(connection))
            openConnectionsIfNeeded(&actions)
        }
        return actions
    }

    /// An idle connection closed by itself (the server went away); nil when it was not idle
    /// (a leased one reports through `connectionReleased(reusable: false)` instead).
    mutating func idleConnectionClosed(_ connection: ConnectionID) -> [Action]? {
        guard connections[connection] == .idle || connections[connection] == .shared(0) else { return nil }
        connections[connection] = nil
        idle.removeAll { $0 == connection }
        forget(connection)
        var actions: [Action] = []
        openConnectionsIfNeeded(&actions)
        return actions
    }

    /// Fails waiters past their deadline and starts a reconnect that is due.
    mutating func timerFired(now: Duration) -> [Action] {
        var actions: [Action] = []
        for (resource, held) in quarantine where held.until <= now {
            quarantine[resource] = nil
            // An idle former holder is free for anyone again.
            if connections[held.connection] == .idle, !waiters.isEmpty, !isQuarantineHolder(held.connection) {
                idle.removeAll { $0 == held.connection }
                hand(held.connection, now: now, to: &actions)
            }
        }
        while let first = waiters.first, first.deadline <= now {
            waiters.removeFirst()
            actions.append(.fail(first.id, PostgresError(.poolTimeout, "no connection became free within \(configuration.acquireTimeout)")))
        }
        if let due = reconnectAt, due <= now {
            reconnectAt = nil
            if !shuttingDown && connectingCount == 0 {
                actions.append(.connect(newConnection()))
            }
        }
        return actions
    }

    /// Stops lending: waiters fail, idle connections close, leased ones close when returned.
    mutating func shutdown() -> [Action] {
        shuttingDown = true
        reconnectAt = nil
        var actions: [Action] = []
        while let waiter = waiters.popFirst() {
            actions.append(.fail(waiter.id, PostgresError(.poolClosed, "the connection pool is shutting down")))
        }
        for connection in idle {
            connections[connection] = nil
            forget(connection)
            actions.append(.close(connection))
        }
        idle.removeAll()
        for (connection, state) in connections where state == .shared(0) {
            connections[connection] = nil
            forget(connection)
            actions.append(.close(connection))
        }
        return actions
    }

    // MARK: Helpers

    /// Gives a ready connection to the first waiter (and, when it is shared, to the shared
    /// waiters behind it, up to the pipeline depth), or parks it as idle.
    private mutating func hand(_ connection: ConnectionID, now: Duration, to actions: inout [Action]) {
        guard let waiter = waiters.popFirst() else {
            connections[connection] = .idle
            idle.append(connection)
            return
        }
        actions.append(.lease(connection, to: waiter.id, waited: now - waiter.enqueuedAt))
        guard waiter.kind.isShared else {
            connections[connection] = .leased
            return
        }
        countWrite(waiter.kind, on: connection)
        var count = 1
        while count < configuration.maxSharedPerConnection, let next = waiters.first, next.kind.isShared {
            waiters.removeFirst()
            countWrite(next.kind, on: connection)
            count += 1
            actions.append(.lease(connection, to: next.id, waited: now - next.enqueuedAt))
        }
        connections[connection] = .shared(count)
    }

    /// The connection a lease gets without waiting: for an exclusive lease an idle one, for a
    /// shared lease the least loaded of the idle ones and the shared ones with room (an idle
    /// connection beats doubling up on a busy one). Connections of the caller's `group` come
    /// first, then (for a read) those carrying no write; among equals, the most recently used
    /// idle connection.
    /// `cap`: the most shared leases a connection may carry for this one.
    private func bestConnection(for kind: LeaseKind, group: Int?, avoiding: ConnectionID? = nil, cap: Int) -> ConnectionID? {
        var best: (id: ConnectionID, score: (Int, Int, Int))?
        func consider(_ id: ConnectionID, load: Int) {
            let behindWrite = kind == .shared && writes[id] != nil ? 1 : 0
            let score = (group == nil || groups[id] == group ? 0 : 1, behindWrite, load)
            if best == nil || score < best!.score { best = (id, score) }
        }
        let holders = quarantine.isEmpty ? [] : Set(quarantine.values.map(\.connection))
        for id in idle.reversed() where !holders.contains(id) && id != avoiding { consider(id, load: 0) }
        if kind.isShared {
            for (id, state) in connections where stalled[id] == nil && id != avoiding && !holders.contains(id) {
                if case .shared(let count) = state, count < cap { consider(id, load: count) }
            }
        }
        return best?.id
    }

    /// `openBatch` (a connection whose reads of this loop turn still wait for their sync) when
    /// a read can join it: it is shared, has room and carries no write.
    private func joinableBatch(_ openBatch: ConnectionID?, for kind: LeaseKind, cap: Int) -> ConnectionID? {
        guard kind == .shared, let id = openBatch, writes[id] == nil, stalled[id] == nil, !isQuarantineHolder(id),
              case .shared(let count) = connections[id], count < cap else { return nil }
        return id
    }

    /// Counts a shared write lease granted on `connection`.
    private mutating func countWrite(_ kind: LeaseKind, on connection: ConnectionID) {
        if kind == .sharedWrite { writes[connection, default: 0] += 1 }
    }

    private mutating func addSharedLease(_ connection: ConnectionID) {
        guard case .shared(let count) = connections[connection] else { return }
        connections[connection] = .shared(count + 1)
    }

    /// Opens connections for waiters (and the minimum), unless backing off after failures.
    private mutating func openConnectionsIfNeeded(_ actions: inout [Action]) {
        guard !shuttingDown else { return }
        if consecutiveFailures > 0 {
            // Backing off: only the reconnect timer opens (one connection, as a probe).
            return
        }
        let wanted = max(configuration.minConnections, openCount - idle.count + waiters.count)
        var total = connections.count
        while total < min(wanted, configuration.maxConnections), connectingCount < max(1, waiters.count) {
            actions.append(.connect(newConnection()))
            total += 1
        }
    }
}
