import Database
import Foundation
import Logging
import Metrics
import Server
import ServiceLifecycle

/// Runs the HTTP server until graceful shutdown, then fails readiness, stops accepting and
/// drains requests in flight within the grace period.
struct HTTPService: Service {
    let server: HTTPServer
    let readiness: Readiness
    let gracePeriod: Duration
    /// Run as the drain begins (the event streams end, so their connections can close).
    var onDrain: @Sendable () -> Void = {}

    func run() async throws {
        try server.start()
        try? await gracefulShutdown()
        armExitDeadline()
        readiness.beginShutdown()
        onDrain()
        await server.shutdown(gracePeriod: gracePeriod)
    }

    /// Past the grace period plus `HTTPService.exitMargin`, the process exits (status 1) whatever
    /// is still pending, saying what was: a stuck pool or handler never keeps a pod from stopping.
    /// Dispatch's own thread keeps this deadline even if Swift's cooperative threads are stuck.
    private func armExitDeadline() {
        let server = server
        let deadline = gracePeriod + Self.exitMargin
        let (seconds, attoseconds) = deadline.components
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000))) {
            let message = "task-management: shutdown did not finish within \(deadline); exiting with \(server.requestsInFlight) requests in flight\n"
            FileHandle.standardError.write(Data(message.utf8))
            exit(1)
        }
    }

    /// Time after the grace period for the pool to drain and the loops to stop.
    static let exitMargin = Duration.seconds(5)
}

/// Keeps the connection pool for as long as the server runs, then drains and closes it.
struct PoolService: Service {
    let pool: ConnectionPool
    let gracePeriod: Duration

    func run() async throws {
        try? await gracefulShutdown()
        await pool.shutdown(gracePeriod: gracePeriod)
    }
}

/// Housekeeping every `interval`: deletes expired idempotency keys, in batches so that no
/// request waits on a large delete (replicas doing the same skip each other's rows), and folds
/// the revision counter's rows of backends that have gone. Stops at graceful shutdown.
struct Housekeeping: Service {
    let store: any TaskStore
    let interval: Duration
    let logger: Logger
    /// Rows per statement, and statements per round (the rest waits for the next round).
    static let batchSize = 1000
    static let maxBatchesPerRound = 100

    func run() async throws {
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try await Task.sleep(for: interval)
                await purgeExpiredKeys()
                await compactRevisionCounter()
            }
        }
    }

    /// One round of key deletion; how many keys it deleted.
    @discardableResult
    func purgeExpiredKeys() async -> Int {
        var total = 0
        do {
            for _ in 0..<Self.maxBatchesPerRound {
                let deleted = try await store.purgeExpiredIdempotencyKeys(limit: Self.batchSize)
                total += deleted
                if deleted < Self.batchSize { break }
            }
        } catch {
            logger.warning("could not purge expired idempotency keys", metadata: ["error": "\(error)"])
        }
        if total > 0 { logger.debug("purged expired idempotency keys", metadata: ["count": "\(total)"]) }
        return total
    }

    /// How many counter rows it folded (0 when it could not).
    @discardableResult
    func compactRevisionCounter() async -> Int {
        do {
            return try await store.compactRevisionCounter()
        } catch {
            logger.warning("could not compact the revision counter", metadata: ["error": "\(error)"])
            return 0
        }
    }
}

/// Carries committed changes from PostgreSQL to the change feed: one `NotificationListener`
/// on `EventFeed.channel` (outside the request pool), each notification turned into an event
/// in the order it came, the task or settings row read again so the event holds what
/// `GET /api/tasks/{id}` or `GET /api/settings` would answer (the rows of every notification
/// waiting are read in one statement). After the listener reconnects, or
/// when a row cannot be read, subscribers get `resync` (they may have missed something). Sends
/// the heartbeats too. Stops at graceful shutdown.
struct EventRelay: Service {
    let pool: ConnectionPool
    let store: any TaskStore
    let feed: EventFeed
    /// Where the LISTEN connection goes; nil: nowhere (the feed sends heartbeats only).
    let listenURL: String?
    let logger: Logger
    /// Notifications waiting to be turned into events; beyond this, subscribers resync.
    static let maxPending = 10_000
    /// Notifications whose rows are read in one statement.
    static let maxBatch = 1000

    func run() async throws {
        let connected = Gauge(label: "sse_listener_connected")
        connected.record(0)
        let feed = feed
        let heartbeats = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: feed.limits.heartbeat)
                feed.heartbeat()
            }
        }
        let rounds = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: feed.limits.batchInterval)
                feed.flush()
            }
        }
        defer {
            heartbeats.cancel()
            rounds.cancel()
        }
        guard let listenURL else {
            logger.warning("no LISTEN connection (DB_PGBOUNCER=transaction without DB_LISTEN_URL): /api/events sends heartbeats only")
            try? await gracefulShutdown()
            return
        }
        let notifications = BatchQueue<NotificationListener.Event>(capacity: Self.maxPending)
        // Pinged as often as the streams get heartbeats: a dead LISTEN connection is noticed as soon.
        let listener = pool.listen(channel: EventFeed.channel, conninfo: listenURL, pingInterval: feed.limits.heartbeat) { event in
            if !notifications.push(event) { feed.resyncAll() }
        }
        await cancelWhenGracefulShutdown {
            var listenedBefore = false
            // What came while the last batch was read is read together: one statement however many.
            while let batch = await notifications.next() {
                var changes: [String] = []
                for event in batch {
                    switch event {
                    case .listening:
                        await relay(changes)
                        changes.removeAll()
                        connected.record(1)
                        if listenedBefore { feed.resyncAll() }
                        listenedBefore = true
                    case .lost:
                        connected.record(0)
                    case .notification(let payload):
                        changes.append(payload)
                        if changes.count == Self.maxBatch {
                            await relay(changes)
                            changes.removeAll()
                        }
                    }
                }
                await relay(changes)
            }
        }
        listener.stop()
        notifications.finish()
    }

    /// A change a notification names (`task.created 12`, …).
    enum NotifiedChange: Equatable {
        case task(name: String, id: Int)
        case taskDeleted(id: Int)
        case settings
        case truncated
        case unknown

        init(_ payload: String) {
            let parts = payload.split(separator: " ")
            let id = parts.count == 2 ? Int(parts[1]) : nil
            switch (parts.first, id) {
            case ("task.created", let id?): self = .task(name: "task.created", id: id)
            case ("task.updated", let id?): self = .task(name: "task.updated", id: id)
            case ("task.deleted", let id?): self = .taskDeleted(id: id)
            case ("settings.updated", _): self = .settings
            case ("tasks.truncated", _): self = .truncated
            default: self = .unknown
            }
        }
    }

    /// Notifications as events, in their order; the rows they name are read in one go (a row
    /// changed twice in the batch is read once, as it is now).
    func relay(_ payloads: [String]) async {
        guard !payloads.isEmpty else { return }
        let changes = payloads.map(NotifiedChange.init)
        var ids: [Int] = []
        var wantsSettings = false
        for change in changes {
            switch change {
            case .task(_, let id): ids.append(id)
            case .settings: wantsSettings = true
            case .taskDeleted, .truncated, .unknown: break
            }
        }
        var tasks: [Int: TaskItem] = [:]
        var settings: SettingsItem?
        do {
            async let found = store.find(ids: Array(Set(ids)))
            async let read = wantsSettings ? store.settings().value : nil
            for task in try await found { tasks[task.value.id] = task.value }
            settings = try await read
        } catch {
            logger.warning("could not read changed rows for the event feed; subscribers resync", metadata: ["error": "\(error)"])
            feed.resyncAll()
            return
        }
        var events: [EventFeed.Change] = []
        for (change, payload) in zip(changes, payloads) {
            switch change {
            case .task(let name, let id):
                // Gone already: its deletion's event follows.
                guard let task = tasks[id] else { continue }
                events.append(.init(name: name, topic: .tasks, data: TaskRoutes.eventData(task)))
            case .taskDeleted(let id):
                events.append(.init(name: "task.deleted", topic: .tasks, data: Array("{\"id\":\(id)}".utf8)))
            case .settings:
                if let settings { events.append(.init(name: "settings.updated", topic: .settings, data: TaskRoutes.eventData(settings))) }
            case .truncated:
                feed.publish(events)
                events.removeAll()
                feed.resyncAll()
            case .unknown:
                logger.debug("notification ignored", metadata: ["payload": "\(payload.prefix(64))"])
            }
        }
        feed.publish(events)
    }
}
