import Testing
@testable import Database

/// How the pool routes around connections whose statements stopped making progress.
@Suite("Pool state machine: stalled connections (pure, manual clock)")
struct PoolStallTests {
    private let t0 = Duration.seconds(100)

    /// Two open connections (0 and 1), idle, pipelining up to 2 statements each.
    private func twoConnections() -> PoolStateMachine {
        var pool = PoolStateMachine(configuration: .init(
            maxConnections: 2, minConnections: 0, maxWaiters: 10, acquireTimeout: .seconds(2), maxSharedPerConnection: 2,
            initialBackoff: .milliseconds(100), maxBackoff: .seconds(1), quarantineHold: .seconds(1)
        ))
        _ = pool.leaseRequested(1, kind: .exclusive, now: t0)
        _ = pool.leaseRequested(2, kind: .exclusive, now: t0)
        _ = pool.connectSucceeded(0, now: t0)
        _ = pool.connectSucceeded(1, now: t0)
        _ = pool.connectionReleased(0, reusable: true, now: t0)
        _ = pool.connectionReleased(1, reusable: true, now: t0)
        return pool
    }

    @Test func aStalledConnectionGetsNoOtherWorkAndItsResourceGoesBehindIt() {
        var pool = twoConnections()
        #expect(pool.leaseRequested(10, kind: .shared, resource: "tasks", now: t0) == [.lease(1, to: 10, waited: .zero)])
        #expect(pool.connectionStalled(1, resource: "tasks", now: t0) == [])
        #expect(pool.stalledCount == 1)
        // Another table's read goes to the healthy connection, the blocked table's behind the stall.
        #expect(pool.leaseRequested(11, kind: .shared, resource: "settings", now: t0) == [.lease(0, to: 11, waited: .zero)])
        #expect(pool.leaseRequested(12, kind: .shared, resource: "tasks", now: t0) == [.lease(1, to: 12, waited: .zero)])
        // The stalled connection is full (depth 2): the blocked table's next read fails at once.
        let refused = pool.leaseRequested(13, kind: .shared, resource: "tasks", now: t0)
        guard case .fail(13, let error) = refused.first else { Issue.record("expected a refusal, got \(refused)"); return }
        #expect(error.kind == .stalled)
        // The healthy connection still serves everything else.
        #expect(pool.leaseRequested(14, kind: .shared, resource: "settings", now: t0) == [.lease(0, to: 14, waited: .zero)])
    }

    /// A holder that moves again (a pause, not a lock) and is full no longer refuses: the
    /// statement is placed as usual.
    @Test func aFullHolderThatMovesAgainNoLongerRefuses() {
        var pool = twoConnections()
        _ = pool.leaseRequested(10, kind: .shared, resource: "tasks", now: t0)
        _ = pool.connectionStalled(1, resource: "tasks", now: t0)
        #expect(pool.leaseRequested(11, kind: .shared, resource: "tasks", now: t0) == [.lease(1, to: 11, waited: .zero)])
        _ = pool.connectionResumed(1, now: t0 + .milliseconds(10))
        #expect(pool.leaseRequested(12, kind: .shared, resource: "tasks", now: t0) == [.lease(0, to: 12, waited: .zero)])
    }

    @Test func aSecondConnectionStalledOnTheSameResourceIsToldToCancel() {
        var pool = twoConnections()
        _ = pool.leaseRequested(10, kind: .shared, resource: "tasks", now: t0)
        _ = pool.leaseRequested(11, kind: .shared, resource: "tasks", now: t0)
        #expect(pool.connectionStalled(1, resource: "tasks", now: t0) == [])
        #expect(pool.connectionStalled(0, resource: "tasks", now: t0) == [.cancelHead(0)])
    }

    @Test func aResumedHolderServesOnlyItsResourceUntilTheHoldEnds() {
        var pool = twoConnections()
        _ = pool.leaseRequested(10, kind: .shared, resource: "tasks", now: t0)
        _ = pool.connectionStalled(1, resource: "tasks", now: t0)
        _ = pool.connectionReleased(1, kind: .shared, reusable: true, now: t0)
        #expect(pool.connectionResumed(1, now: t0 + .milliseconds(50)) == [])
        // Another table's reads keep off it while the hold lasts...
        #expect(pool.leaseRequested(20, kind: .shared, resource: "settings", now: t0) == [.lease(0, to: 20, waited: .zero)])
        #expect(pool.leaseRequested(21, kind: .shared, resource: "settings", now: t0) == [.lease(0, to: 21, waited: .zero)])
        #expect(pool.leaseRequested(22, kind: .shared, resource: "settings", now: t0) == [])
        #expect(pool.nextDeadline == t0 + .seconds(1))
        // ...and once it ends the connection serves the waiter.
        #expect(pool.timerFired(now: t0 + .seconds(1)) == [.lease(1, to: 22, waited: .seconds(1))])
    }

    @Test func aStalledConnectionReleasedByEveryoneIsNotLentUntilItResumes() {
        var pool = twoConnections()
        _ = pool.leaseRequested(10, kind: .shared, resource: "settings", now: t0)
        _ = pool.connectionStalled(1, resource: "", now: t0)
        _ = pool.connectionReleased(1, kind: .shared, reusable: true, now: t0)
        #expect(pool.idleCount == 1)
        #expect(pool.leaseRequested(11, kind: .exclusive, now: t0) == [.lease(0, to: 11, waited: .zero)])
        #expect(pool.leaseRequested(12, kind: .exclusive, now: t0) == [])
        #expect(pool.connectionResumed(1, now: t0 + .seconds(1)) == [.lease(1, to: 12, waited: .seconds(1))])
    }

    /// Impossible events (a release of an idle connection, a connect result for an unknown one)
    /// drop the connection instead of stopping the process.
    @Test func impossibleEventsCloseTheConnectionInsteadOfTrapping() {
        var pool = twoConnections()
        #expect(pool.connectionReleased(0, reusable: true, now: t0).first == .close(0))
        #expect(pool.connectSucceeded(42, now: t0) == [.close(42)])
        #expect(pool.connectFailed(43, error: PostgresError(.connectFailed, "x"), now: t0) == [])
        #expect(pool.openCount == 1)
    }
}
