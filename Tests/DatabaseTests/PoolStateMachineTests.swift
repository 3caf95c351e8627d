import Testing
@testable import Database

/// The pool's decisions with a hand-driven clock: no database, no sleeps.
@Suite("Pool state machine (pure, manual clock)")
struct PoolStateMachineTests {
    private func machine(max: Int = 2, min: Int = 0, waiters: Int = 3, timeout: Duration = .seconds(2)) -> PoolStateMachine {
        PoolStateMachine(configuration: .init(
            maxConnections: max, minConnections: min, maxWaiters: waiters, acquireTimeout: timeout, maxSharedPerConnection: 2,
            initialBackoff: .milliseconds(100), maxBackoff: .seconds(1)
        ))
    }

    private let t0 = Duration.seconds(100)

    @Test func opensOnDemandAndLendsWhenConnected() {
        var pool = machine()
        do { let result = pool.leaseRequested(1, now: t0); #expect(result == [.connect(0)]) }
        do { let result = pool.connectSucceeded(0, now: t0 + .milliseconds(5)); #expect(result == [.lease(0, to: 1, waited: .milliseconds(5))]) }
        #expect(pool.leasedCount == 1)
        do { let result = pool.connectionReleased(0, reusable: true, now: t0); #expect(result == []) }
        #expect(pool.idleCount == 1)
        do { let result = pool.leaseRequested(2, now: t0); #expect(result == [.lease(0, to: 2, waited: .zero)]) }
    }

    @Test func neverOpensMoreThanTheMaximumAndServesFIFO() {
        var pool = machine(max: 2, waiters: 10)
        do { let result = pool.leaseRequested(1, now: t0); #expect(result == [.connect(0)]) }
        do { let result = pool.leaseRequested(2, now: t0); #expect(result == [.connect(1)]) }
        do { let result = pool.leaseRequested(3, now: t0); #expect(result == []) }
        do { let result = pool.leaseRequested(4, now: t0); #expect(result == []) }
        do { let result = pool.connectSucceeded(1, now: t0); #expect(result == [.lease(1, to: 1, waited: .zero)]) }
        do { let result = pool.connectSucceeded(0, now: t0); #expect(result == [.lease(0, to: 2, waited: .zero)]) }
        do { let result = pool.connectionReleased(0, reusable: true, now: t0 + .seconds(1)); #expect(result == [.lease(0, to: 3, waited: .seconds(1))]) }
        do { let result = pool.connectionReleased(1, reusable: true, now: t0 + .seconds(1)); #expect(result == [.lease(1, to: 4, waited: .seconds(1))]) }
        #expect(pool.openCount == 2)
    }

    @Test func waitersTimeOutAtTheirDeadline() {
        var pool = machine(max: 1, timeout: .seconds(2))
        _ = pool.leaseRequested(1, now: t0)
        _ = pool.connectSucceeded(0, now: t0)
        do { let result = pool.leaseRequested(2, now: t0 + .seconds(1)); #expect(result == []) }
        #expect(pool.nextDeadline == t0 + .seconds(3))
        do { let result = pool.timerFired(now: t0 + .milliseconds(2999)); #expect(result == []) }
        let actions = pool.timerFired(now: t0 + .seconds(3))
        #expect(actions.count == 1)
        guard case .fail(2, let error) = actions.first else { Issue.record("expected waiter 2 to fail"); return }
        #expect(error.kind == .poolTimeout)
        #expect(pool.waiterCount == 0)
    }

    @Test func lookupsGoDeeperIntoAPipelineThanOtherReads() {
        var pool = PoolStateMachine(configuration: .init(
            maxConnections: 1, minConnections: 1, maxWaiters: 10, acquireTimeout: .seconds(2), maxSharedPerConnection: 2,
            maxLookupsPerConnection: 4, initialBackoff: .milliseconds(100), maxBackoff: .seconds(1)
        ))
        _ = pool.start()
        _ = pool.connectSucceeded(0, now: t0)
        #expect(pool.leaseRequested(1, kind: .shared, now: t0) == [.lease(0, to: 1, waited: .zero)])
        #expect(pool.leaseRequested(2, kind: .shared, lookup: true, now: t0) == [.lease(0, to: 2, waited: .zero)])
        // Two on the connection: a list (not a lookup) waits, a lookup joins up to four.
        #expect(pool.leaseRequested(3, kind: .shared, now: t0) == [])
        #expect(pool.leaseRequested(4, kind: .shared, lookup: true, now: t0) == [], "behind a waiter, a lookup waits too")
        _ = pool.connectionReleased(0, kind: .shared, reusable: true, now: t0)
        _ = pool.connectionReleased(0, kind: .shared, reusable: true, now: t0)
        _ = pool.connectionReleased(0, kind: .shared, reusable: true, now: t0)
        _ = pool.connectionReleased(0, kind: .shared, reusable: true, now: t0)
        #expect(pool.waiterCount == 0)
        for waiter in 5...8 { #expect(pool.leaseRequested(waiter, kind: .shared, lookup: true, now: t0) == [.lease(0, to: waiter, waited: .zero)]) }
        #expect(pool.leaseRequested(9, kind: .shared, lookup: true, now: t0) == [], "four is the most")
        #expect(pool.leaseRequested(10, kind: .sharedWrite, now: t0) == [])
    }

    @Test func theQueueIsBounded() {
        var pool = machine(max: 1, waiters: 2)
        _ = pool.leaseRequested(1, now: t0)
        _ = pool.leaseRequested(2, now: t0)
        _ = pool.leaseRequested(3, now: t0)
        guard case .fail(4, let error) = pool.leaseRequested(4, now: t0).first else { Issue.record("expected a refusal"); return }
        #expect(error.kind == .poolQueueFull)
    }

    @Test func cancelledWaitersLeaveTheQueue() {
        var pool = machine(max: 1)
        _ = pool.leaseRequested(1, now: t0)
        _ = pool.leaseRequested(2, now: t0)
        do { let result = pool.waiterCancelled(1); #expect(result) }
        do { let result = pool.waiterCancelled(1); #expect(!result) }
        do { let result = pool.connectSucceeded(0, now: t0); #expect(result == [.lease(0, to: 2, waited: .zero)]) }
    }

    @Test func failsFastWhileDownAndBacksOffBeforeReconnecting() {
        var pool = machine(max: 2)
        _ = pool.leaseRequested(1, now: t0)
        let failure = PostgresError(.connectFailed, "connection refused")
        let actions = pool.connectFailed(0, error: failure, now: t0)
        guard case .fail(1, let error) = actions.first else { Issue.record("expected waiter 1 to fail"); return }
        #expect(error.kind == .unavailable)
        #expect(!pool.isReachable)
        // New requests fail at once instead of waiting for the acquire timeout.
        guard case .fail(2, let fast) = pool.leaseRequested(2, now: t0 + .milliseconds(1)).first else { Issue.record("expected fail fast"); return }
        #expect(fast.kind == .unavailable)
        // Backoff: 100 ms, then doubling.
        #expect(pool.nextDeadline == t0 + .milliseconds(100))
        do { let result = pool.timerFired(now: t0 + .milliseconds(100)); #expect(result == [.connect(1)]) }
        _ = pool.connectFailed(1, error: failure, now: t0 + .milliseconds(110))
        #expect(pool.nextDeadline == t0 + .milliseconds(310))
        do { let result = pool.timerFired(now: t0 + .milliseconds(310)); #expect(result == [.connect(2)]) }
        do { let result = pool.connectSucceeded(2, now: t0 + .milliseconds(320)); #expect(result == []) }
        #expect(pool.isReachable)
        do { let result = pool.leaseRequested(3, now: t0 + .seconds(1)); #expect(result == [.lease(2, to: 3, waited: .zero)]) }
    }

    @Test func backoffIsCapped() {
        var pool = machine(max: 1)
        var now = t0
        _ = pool.leaseRequested(1, now: now)
        var id = 0
        for _ in 0..<10 {
            _ = pool.connectFailed(id, error: PostgresError(.connectFailed, "down"), now: now)
            let deadline = pool.nextDeadline!
            #expect(deadline - now <= .seconds(1))
            now = deadline
            guard case .connect(let next) = pool.timerFired(now: now).first else { Issue.record("expected a reconnect"); return }
            id = next
        }
    }

    @Test func aBrokenConnectionIsClosedAndReplacedForWaiters() {
        var pool = machine(max: 1)
        _ = pool.leaseRequested(1, now: t0)
        _ = pool.connectSucceeded(0, now: t0)
        _ = pool.leaseRequested(2, now: t0)
        do { let result = pool.connectionReleased(0, reusable: false, now: t0); #expect(result == [.close(0), .connect(1)]) }
        do { let result = pool.connectSucceeded(1, now: t0); #expect(result == [.lease(1, to: 2, waited: .zero)]) }
    }

    @Test func anIdleConnectionThatDiesIsForgotten() {
        var pool = machine(max: 2, min: 1)
        do { let result = pool.start(); #expect(result == [.connect(0)]) }
        _ = pool.connectSucceeded(0, now: t0)
        do { let result = pool.idleConnectionClosed(0); #expect(result == [.connect(1)]) }
        do { let result = pool.idleConnectionClosed(0); #expect(result == nil) }
        #expect(pool.openCount == 0)
    }

    @Test func shutdownFailsWaitersAndClosesEverything() {
        var pool = machine(max: 1)
        _ = pool.leaseRequested(1, now: t0)
        _ = pool.connectSucceeded(0, now: t0)
        _ = pool.leaseRequested(2, now: t0)
        let actions = pool.shutdown()
        guard case .fail(2, let error) = actions.first else { Issue.record("expected waiter 2 to fail"); return }
        #expect(error.kind == .poolClosed)
        #expect(!pool.isShutDownComplete)
        do { let result = pool.connectionReleased(0, reusable: true, now: t0); #expect(result == [.close(0)]) }
        #expect(pool.isShutDownComplete)
        guard case .fail(3, _) = pool.leaseRequested(3, now: t0).first else { Issue.record("expected a refusal"); return }
    }

    @Test func sharedLeasesPipelineOnOneConnectionUpToTheDepth() {
        var pool = machine(max: 1, waiters: 10)
        do { let result = pool.leaseRequested(1, kind: .shared, now: t0); #expect(result == [.connect(0)]) }
        do { let result = pool.leaseRequested(2, kind: .shared, now: t0); #expect(result == []) }
        do { let result = pool.leaseRequested(3, kind: .shared, now: t0); #expect(result == []) }
        // Depth 2: the connection takes two shared leases, the third waits.
        do { let result = pool.connectSucceeded(0, now: t0); #expect(result == [.lease(0, to: 1, waited: .zero), .lease(0, to: 2, waited: .zero)]) }
        do { let result = pool.connectionReleased(0, reusable: true, now: t0 + .seconds(1)); #expect(result == [.lease(0, to: 3, waited: .seconds(1))]) }
        // An exclusive request waits until every shared lease is back.
        do { let result = pool.leaseRequested(4, kind: .exclusive, now: t0); #expect(result == []) }
        do { let result = pool.leaseRequested(5, kind: .shared, now: t0); #expect(result == []) }
        do { let result = pool.connectionReleased(0, reusable: true, now: t0); #expect(result == []) }
        do { let result = pool.connectionReleased(0, reusable: true, now: t0); #expect(result == [.lease(0, to: 4, waited: .zero)]) }
        do { let result = pool.connectionReleased(0, reusable: true, now: t0); #expect(result == [.lease(0, to: 5, waited: .zero)]) }
    }

    /// A machine whose `count` connections are all open and idle.
    private func openMachine(connections count: Int, depth: Int) -> PoolStateMachine {
        var pool = PoolStateMachine(configuration: .init(
            maxConnections: count, minConnections: count, maxWaiters: 10, acquireTimeout: .seconds(2), maxSharedPerConnection: depth,
            initialBackoff: .milliseconds(100), maxBackoff: .seconds(1)
        ))
        var next = pool.start()
        while case .connect(let id)? = next.first { next = pool.connectSucceeded(id, now: t0) }
        return pool
    }

    @Test func readsStayOffAConnectionCarryingAWrite() {
        var pool = openMachine(connections: 2, depth: 4)
        // A write takes one connection; the reads after it pile onto the other until it is full.
        guard case .lease(let writer, to: 1, _) = pool.leaseRequested(1, kind: .sharedWrite, now: t0).first else {
            Issue.record("expected an immediate lease"); return
        }
        var readers: [Int] = []
        for waiter in 2...6 {
            guard case .lease(let connection, to: waiter, _) = pool.leaseRequested(waiter, kind: .shared, now: t0).first else {
                Issue.record("expected an immediate lease"); return
            }
            readers.append(connection)
        }
        #expect(readers[0..<4].allSatisfy { $0 != writer })
        #expect(readers[4] == writer)  // the other is full: behind the write rather than waiting
        // Once the write is back, reads spread over both again by load.
        _ = pool.connectionReleased(writer, kind: .sharedWrite, reusable: true, now: t0)
        _ = pool.connectionReleased(readers[0], kind: .shared, reusable: true, now: t0)
        _ = pool.connectionReleased(readers[1], kind: .shared, reusable: true, now: t0)
        guard case .lease(let after, to: 7, _) = pool.leaseRequested(7, kind: .shared, now: t0).first else {
            Issue.record("expected an immediate lease"); return
        }
        #expect(after == writer)  // load 1 (a read) against 2
    }

    @Test func oneRowReadsJoinTheOpenBatchWhileItHasRoomAndNoWrite() {
        var pool = openMachine(connections: 3, depth: 3)
        func lease(_ waiter: Int, _ kind: PoolStateMachine.LeaseKind = .shared, joining batch: Int? = nil) -> Int? {
            guard case .lease(let connection, to: waiter, _) = pool.leaseRequested(waiter, kind: kind, openBatch: batch, now: t0).first else { return nil }
            return connection
        }
        // Without a batch, reads spread by load; with one, they join it until it is full...
        let first = lease(1)!
        let spread = lease(2)!
        #expect(spread != first)
        #expect(lease(3, joining: first) == first)
        #expect(lease(4, joining: first) == first)
        let full = lease(5, joining: first)!  // depth 3 reached: the least loaded instead
        #expect(full != first && full != spread)
        // A write never joins a batch: it goes by load (full is idle again, spread has one read)...
        _ = pool.connectionReleased(full, kind: .shared, reusable: true, now: t0)
        #expect(lease(6, .sharedWrite, joining: spread) == full)
        // ...and a read never joins a batch on a connection carrying a write.
        #expect(lease(7, joining: full) == spread)
    }

    @Test func aBrokenSharedConnectionIsDroppedOnce() {
        var pool = machine(max: 1, waiters: 10)
        _ = pool.leaseRequested(1, kind: .shared, now: t0)
        _ = pool.leaseRequested(2, kind: .shared, now: t0)
        _ = pool.connectSucceeded(0, now: t0)
        do { let result = pool.connectionReleased(0, reusable: false, now: t0); #expect(result == [.close(0)]) }
        do { let result = pool.connectionReleased(0, reusable: false, now: t0); #expect(result == []) }
        #expect(pool.openCount == 0)
    }

    @Test func connectionsSpreadOverGroupsAndLeasesPreferTheCallersGroup() {
        var pool = PoolStateMachine(configuration: .init(
            maxConnections: 4, minConnections: 4, maxWaiters: 10, acquireTimeout: .seconds(2), maxSharedPerConnection: 4,
            initialBackoff: .milliseconds(100), maxBackoff: .seconds(1), affinityGroups: 2
        ))
        // The minimum opens one connection at a time, alternating between the groups.
        var opened: [Int] = []
        var next = pool.start()
        while case .connect(let id)? = next.first {
            opened.append(id)
            next = pool.connectSucceeded(id, now: t0)
        }
        #expect(opened == [0, 1, 2, 3])
        #expect(opened.map { pool.group(of: $0) }.sorted() == [0, 0, 1, 1])
        let inGroup1 = [0, 1, 2, 3].filter { pool.group(of: $0) == 1 }
        // Shared leases from group 1 fill group 1's connections, least loaded first...
        var leased: [Int] = []
        for waiter in 1...8 {
            guard case .lease(let connection, to: waiter, _) = pool.leaseRequested(waiter, kind: .shared, group: 1, now: t0).first else {
                Issue.record("expected an immediate lease"); return
            }
            leased.append(connection)
        }
        #expect(Set(leased) == Set(inGroup1))
        #expect(leased.filter { $0 == inGroup1[0] }.count == 4)
        // ...and only when those are full go to the other group.
        guard case .lease(let overflow, to: 9, _) = pool.leaseRequested(9, kind: .shared, group: 1, now: t0).first else {
            Issue.record("expected an immediate lease"); return
        }
        #expect(pool.group(of: overflow) == 0)
        // An exclusive lease from group 0 takes group 0's idle connection.
        guard case .lease(let exclusive, to: 10, _) = pool.leaseRequested(10, kind: .exclusive, group: 0, now: t0).first else {
            Issue.record("expected an immediate lease"); return
        }
        #expect(pool.group(of: exclusive) == 0 && exclusive != overflow)
        // A replacement connection goes to the group that lost one.
        let actions = pool.connectionReleased(exclusive, reusable: false, now: t0)
        guard actions.count == 2, actions[0] == .close(exclusive), case .connect(let replacement) = actions[1] else {
            Issue.record("expected a close and a new connection, got \(actions)"); return
        }
        #expect(pool.group(of: replacement) == 0)
    }
}
