import Testing
@testable import Database

/// Thousands of random event sequences through the pool state machine, checked after every
/// step against what must always hold: never more connections than the maximum, every waiter
/// answered exactly once (a lease or a failure), leases only of open connections, nothing
/// lent after shutdown, and no trap whatever the order of events.
@Suite("Pool state machine: randomized model")
struct PoolModelTests {
    /// SplitMix64: a small seeded generator, so a failing sequence can be replayed.
    private struct SeededGenerator: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    /// What the test knows from the actions it was given.
    private struct World {
        var connecting: Set<Int> = []
        var open: Set<Int> = []
        var waiting: Set<Int> = []
        var answered: Set<Int> = []
        /// Lease holders: waiter → (connection, kind).
        var leases: [Int: (connection: Int, kind: PoolStateMachine.LeaseKind)] = [:]
        var shutDown = false
        /// The kind each waiter asked for.
        var kinds: [Int: PoolStateMachine.LeaseKind] = [:]
    }

    @Test func randomEventSequencesKeepEveryInvariant() {
        for seed in UInt64(0)..<3000 { check(seed: seed) }
    }

    /// One sequence of 400 random events from `seed`.
    private func check(seed: UInt64) {
        var random = SeededGenerator(state: seed &* 7919 &+ 1)
        let maxConnections = Int.random(in: 1...4, using: &random)
        var pool = PoolStateMachine(configuration: .init(
            maxConnections: maxConnections, minConnections: Int.random(in: 0...1, using: &random), maxWaiters: 6,
            acquireTimeout: .milliseconds(500), maxSharedPerConnection: Int.random(in: 1...3, using: &random),
            maxLookupsPerConnection: Int.random(in: 0...6, using: &random),
            initialBackoff: .milliseconds(10), maxBackoff: .milliseconds(100), affinityGroups: 2, quarantineHold: .milliseconds(200)
        ))
        var world = World()
        var now = Duration.seconds(1)
        var nextWaiter = 0
        let kinds: [PoolStateMachine.LeaseKind] = [.exclusive, .shared, .sharedWrite]
        let resources: [String?] = [nil, "tasks", "settings"]

        func apply(_ actions: [PoolStateMachine.Action], requested: Int? = nil) {
            for action in actions {
                switch action {
                case .lease(let connection, let waiter, _):
                    #expect(world.waiting.contains(waiter) || waiter == requested, "seed \(seed): lease to \(waiter), who is not waiting")
                    #expect(!world.answered.contains(waiter), "seed \(seed): waiter \(waiter) answered twice")
                    #expect(world.open.contains(connection), "seed \(seed): lease of connection \(connection), which is not open")
                    #expect(!world.shutDown, "seed \(seed): a lease after shutdown")
                    world.waiting.remove(waiter)
                    world.answered.insert(waiter)
                    world.leases[waiter] = (connection, world.kinds[waiter] ?? .exclusive)
                case .fail(let waiter, _):
                    #expect(world.waiting.contains(waiter) || waiter == requested, "seed \(seed): failure for \(waiter), who is not waiting")
                    #expect(!world.answered.contains(waiter), "seed \(seed): waiter \(waiter) answered twice")
                    world.waiting.remove(waiter)
                    world.answered.insert(waiter)
                case .connect(let connection):
                    #expect(!world.shutDown, "seed \(seed): a connect after shutdown")
                    world.connecting.insert(connection)
                case .close(let connection):
                    world.open.remove(connection)
                    world.connecting.remove(connection)
                case .cancelHead(let connection):
                    #expect(world.open.contains(connection), "seed \(seed): cancel on a connection that is not open")
                }
            }
            #expect(world.open.count + world.connecting.count <= maxConnections, "seed \(seed): over the maximum: open \(world.open.sorted()) connecting \(world.connecting.sorted()); machine open \(pool.openCount) connecting \(pool.connectingCount) after \(actions)")
        }

        apply(pool.start())
        for _ in 0..<400 {
            now += .milliseconds(Int.random(in: 0...40, using: &random))
            switch Int.random(in: 0..<100, using: &random) {
            case 0..<30:
                let waiter = nextWaiter
                nextWaiter += 1
                let kind = kinds.randomElement(using: &random)!
                let actions = pool.leaseRequested(
                    waiter, kind: kind, group: Int.random(in: 0...1, using: &random), resource: resources.randomElement(using: &random)!,
                    avoiding: world.open.randomElement(using: &random).flatMap { Bool.random(using: &random) ? $0 : nil },
                    lookup: Bool.random(using: &random), now: now
                )
                world.waiting.insert(waiter)
                world.kinds[waiter] = kind
                apply(actions, requested: waiter)
            case 30..<45:
                guard let connection = world.connecting.randomElement(using: &random) else { continue }
                world.connecting.remove(connection)
                if Int.random(in: 0..<4, using: &random) > 0 {
                    world.open.insert(connection)
                    apply(pool.connectSucceeded(connection, now: now))
                } else {
                    apply(pool.connectFailed(connection, error: PostgresError(.connectFailed, "refused"), now: now))
                }
            case 45..<70:
                guard let (waiter, lease) = world.leases.randomElement(using: &random) else { continue }
                world.leases[waiter] = nil
                let reusable = Int.random(in: 0..<6, using: &random) > 0 && world.open.contains(lease.connection)
                apply(pool.connectionReleased(lease.connection, kind: lease.kind, reusable: reusable, now: now))
            case 70..<75:
                guard let connection = world.open.randomElement(using: &random) else { continue }
                if let actions = pool.idleConnectionClosed(connection) {
                    world.open.remove(connection)
                    apply(actions)
                }
            case 75..<82:
                guard let connection = world.open.randomElement(using: &random) else { continue }
                apply(pool.connectionStalled(connection, resource: resources.randomElement(using: &random)! ?? "", now: now))
            case 82..<88:
                guard let connection = world.open.randomElement(using: &random) else { continue }
                apply(pool.connectionResumed(connection, now: now))
            case 88..<96:
                apply(pool.timerFired(now: now))
            case 96..<99:
                guard let waiter = world.waiting.randomElement(using: &random) else { continue }
                if pool.waiterCancelled(waiter) {
                    world.waiting.remove(waiter)
                    world.answered.insert(waiter)
                }
            default:
                if !world.shutDown, Int.random(in: 0..<3, using: &random) == 0 {
                    apply(pool.shutdown())
                    world.shutDown = true
                }
            }
        }
        // Let everything finish: connects succeed, leases come back, deadlines pass.
        func settleConnects() {
            while let connection = world.connecting.first {
                world.connecting.remove(connection)
                world.open.insert(connection)
                apply(pool.connectSucceeded(connection, now: now))
            }
        }
        for _ in 0..<3 {
            settleConnects()
            while let (waiter, lease) = world.leases.first {
                world.leases[waiter] = nil
                apply(pool.connectionReleased(lease.connection, kind: lease.kind, reusable: world.open.contains(lease.connection), now: now))
                settleConnects()
            }
            now += .seconds(10)
            apply(pool.timerFired(now: now))
        }
        #expect(world.waiting.isEmpty, "seed \(seed): waiters never answered: \(world.waiting.sorted())")
        #expect(pool.waiterCount == 0, "seed \(seed): the pool still queues \(pool.waiterCount)")
        #expect(pool.leasedCount <= pool.stalledCount,
                "seed \(seed): \(pool.leasedCount) connections still counted as leased with every lease returned")
    }
}
