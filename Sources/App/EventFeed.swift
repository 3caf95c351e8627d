import DequeModule
import EventLoopCore
import Foundation
import Metrics

/// The change feed behind `GET /api/events`: events published by `EventRelay` (from PostgreSQL
/// notifications) go to every subscriber whose topics they match, each with an id that
/// increases; the last `historySize` are kept so a client reconnecting with `Last-Event-ID` gets
/// what it missed, or `resync` when that is no longer held (or the id is another process's).
/// Fan-out copies a snapshot of the subscribers under the feed's lock and pushes to each under
/// that subscriber's own lock: O(subscribers) per event, no lock held for long.
final class EventFeed: Sendable {
    /// The NOTIFY channel the triggers in `Schema.eventStatements` send on.
    static let channel = "task_management_events"

    enum Topic: String, CaseIterable, Sendable {
        case tasks, settings
    }

    struct Event: Sendable {
        let sequence: UInt64
        let name: String
        let topic: Topic
        /// The event as the stream sends it (`id:`, `event:` and `data:` lines and the blank
        /// line), written once for every subscriber.
        let frame: [UInt8]
    }

    struct Limits: Sendable {
        var maxSubscribers = 4096
        var historySize = 1000
        /// Events queued for one subscriber beyond which it is cut off with `resync`.
        var subscriberBuffer = 256
        var heartbeat: Duration = .seconds(15)
        /// How often queued events are handed to the streams: one write per stream per round,
        /// however many events came (a write per event per stream does not scale).
        var batchInterval: Duration = .milliseconds(25)
    }

    /// Unique to this process: ids of other processes (or of an earlier run) are told apart.
    let epoch = String(UInt32.random(in: 0x1000_0000...UInt32.max), radix: 16)
    let limits: Limits
    private struct State {
        var subscribers: [Int: Subscriber] = [:]
        var history: Deque<Event> = []
        var nextSequence: UInt64 = 1
        var nextSubscriber = 0
        var closed = false
        /// Something was queued since the last `flush`.
        var pending = false
    }
    private let state = LockedValue(State())
    private let metrics = FeedMetrics()

    init(limits: Limits) {
        self.limits = limits
    }

    /// A new subscriber to `topics`, with what it missed since `lastEventID` queued first (or a
    /// `resync` when that is not held); nil when `maxSubscribers` are connected or the feed is
    /// closed.
    func subscribe(topics: Set<Topic>, lastEventID: String?) -> Subscriber? {
        let subscriber: Subscriber? = state.withLock { state in
            guard !state.closed, state.subscribers.count < limits.maxSubscribers else { return nil }
            let subscriber = Subscriber(id: state.nextSubscriber, topics: topics, buffer: limits.subscriberBuffer, feed: self)
            state.nextSubscriber += 1
            state.subscribers[subscriber.id] = subscriber
            if let lastEventID {
                if let missed = Self.events(after: lastEventID, epoch: epoch, in: state.history) {
                    subscriber.push(missed.lazy.filter { topics.contains($0.topic) }.map { .event($0) })
                } else {
                    subscriber.push(.resync)
                }
            }
            return subscriber
        }
        if subscriber != nil { metrics.subscribers.record(subscriberCount) }
        return subscriber
    }

    /// The held events after `id`, or nil when `id` is not this process's or too old.
    private static func events(after id: String, epoch: String, in history: Deque<Event>) -> [Event]? {
        let parts = id.split(separator: "-", maxSplits: 1)
        guard parts.count == 2, parts[0] == epoch, let sequence = UInt64(parts[1]) else { return nil }
        guard let first = history.first else { return sequence == 0 ? [] : nil }
        // Held when the event after it is still in the history (or nothing came since).
        guard sequence + 1 >= first.sequence, sequence < first.sequence + UInt64(history.count) else { return nil }
        return history.filter { $0.sequence > sequence }
    }

    func unsubscribe(_ subscriber: Subscriber) {
        let removed = state.withLock { $0.subscribers.removeValue(forKey: subscriber.id) != nil }
        if removed { metrics.subscribers.record(subscriberCount) }
    }

    /// A committed change as the relay hands it over: the event's name, topic and data.
    struct Change: Sendable {
        let name: String
        let topic: Topic
        let data: [UInt8]
    }

    /// Gives each change an id, keeps it in the history and queues it for its topic's
    /// subscribers (each subscriber's queue is locked once for all of them).
    func publish(_ changes: [Change]) {
        guard !changes.isEmpty else { return }
        let (events, subscribers) = state.withLock { state -> ([Event], [Subscriber]) in
            var events: [Event] = []
            events.reserveCapacity(changes.count)
            for change in changes {
                let id = "\(epoch)-\(state.nextSequence)"
                let frame = Array("id: \(id)\nevent: \(change.name)\ndata: ".utf8) + change.data + Array("\n\n".utf8)
                events.append(Event(sequence: state.nextSequence, name: change.name, topic: change.topic, frame: frame))
                state.nextSequence += 1
            }
            state.history.append(contentsOf: events)
            if state.history.count > limits.historySize { state.history.removeFirst(state.history.count - limits.historySize) }
            return (events, Array(state.subscribers.values))
        }
        let topics = Set(events.map(\.topic))
        for subscriber in subscribers where !subscriber.topics.isDisjoint(with: topics) {
            subscriber.push(events.lazy.filter { subscriber.topics.contains($0.topic) }.map { .event($0) })
        }
        markPending()
    }

    /// Every subscriber is told to refetch: changes may have been missed (the listener was away).
    func resyncAll() {
        for subscriber in snapshot() { subscriber.push(.resync) }
        markPending()
    }

    /// A heartbeat for every subscriber (sent when nothing else is queued).
    func heartbeat() {
        for subscriber in snapshot() { subscriber.push(.heartbeat) }
        markPending()
    }

    private func snapshot() -> [Subscriber] {
        state.withLock { Array($0.subscribers.values) }
    }

    /// Marked only once the items are queued: a round that ran between marking and queueing
    /// would find nothing to hand over and clear the mark, and the items would wait for the next
    /// event or heartbeat.
    private func markPending() {
        state.withLock { $0.pending = true }
    }

    /// Hands what was queued since the last round to the streams waiting for it (called every
    /// `limits.batchInterval`).
    func flush() {
        let subscribers = state.withLock { state -> [Subscriber] in
            guard state.pending else { return [] }
            state.pending = false
            return Array(state.subscribers.values)
        }
        for subscriber in subscribers { subscriber.wake() }
    }

    /// Shutdown: every stream ends now with a retry hint, and no new one starts.
    func closeAll() {
        let subscribers = state.withLock { state -> [Subscriber] in
            state.closed = true
            return Array(state.subscribers.values)
        }
        for subscriber in subscribers { subscriber.push(.closing) }
    }

    var subscriberCount: Int { state.withLock { $0.subscribers.count } }

    /// Counts what a subscriber took from its queue in one go.
    fileprivate func counted(_ items: [Subscriber.Item]) {
        var events = 0, resyncs = 0, dropped = 0
        for item in items {
            switch item {
            case .event: events += 1
            case .resync: resyncs += 1
            case .overflowed: resyncs += 1; dropped += 1
            case .heartbeat, .closing: break
            }
        }
        if events > 0 { metrics.eventsSent.increment(by: events) }
        if resyncs > 0 { metrics.resyncs.increment(by: resyncs) }
        if dropped > 0 { metrics.dropped.increment(by: dropped) }
    }

    /// One stream's queue: what the feed pushed and its writer has not taken yet, bounded.
    final class Subscriber: Sendable {
        enum Item: Sendable {
            case event(Event)
            case resync
            case heartbeat
            /// The subscriber fell `buffer` events behind: it is sent `resync` and closed.
            case overflowed
            case closing
        }

        let id: Int
        let topics: Set<Topic>
        private let buffer: Int
        private unowned let feed: EventFeed
        private struct Queue {
            var items: Deque<Item> = []
            var waiter: CheckedContinuation<[Item], Never>?
            var ended = false

            mutating func takeWaiting() -> CheckedContinuation<[Item], Never>? {
                defer { waiter = nil }
                return waiter
            }
        }
        private let queue = LockedValue(Queue())

        fileprivate init(id: Int, topics: Set<Topic>, buffer: Int, feed: EventFeed) {
            self.id = id
            self.topics = topics
            self.buffer = buffer
            self.feed = feed
        }

        /// Queues `item`; the stream takes it at the feed's next `flush` (`.closing` at once).
        fileprivate func push(_ item: Item) {
            push(CollectionOfOne(item))
        }

        /// Queues `items` in order, under one lock.
        fileprivate func push(_ items: some Sequence<Item>) {
            var taken: [Item] = []
            let waiter = queue.withLock { queue -> CheckedContinuation<[Item], Never>? in
                var closing = false
                for item in items {
                    guard !queue.ended else { return nil }
                    if case .heartbeat = item, !queue.items.isEmpty { continue }  // something is on its way already
                    if queue.items.count >= buffer {
                        queue.items = [.overflowed]
                        queue.ended = true
                        return nil
                    }
                    queue.items.append(item)
                    if case .closing = item { closing = true }
                }
                // Closing: what is queued goes out now, not at the next round.
                guard closing, queue.waiter != nil else { return nil }
                taken = Array(queue.items)
                queue.items.removeAll()
                return queue.takeWaiting()
            }
            waiter?.resume(returning: taken)
        }

        /// Hands everything queued to a stream waiting for it.
        fileprivate func wake() {
            var items: [Item] = []
            let waiter = queue.withLock { queue -> CheckedContinuation<[Item], Never>? in
                guard queue.waiter != nil, !queue.items.isEmpty else { return nil }
                items = Array(queue.items)
                queue.items.removeAll(keepingCapacity: true)
                return queue.takeWaiting()
            }
            waiter?.resume(returning: items)
        }

        /// Everything queued (at least one item, waiting for the next `flush`): a subscriber
        /// that fell behind catches up in one write. After `.overflowed` or `.closing` the stream
        /// ends.
        func next() async -> [Item] {
            let items: [Item] = await withCheckedContinuation { continuation in
                let ready = queue.withLock { queue -> [Item]? in
                    guard !queue.items.isEmpty else {
                        queue.waiter = continuation
                        return nil
                    }
                    let items = Array(queue.items)
                    queue.items.removeAll(keepingCapacity: true)
                    return items
                }
                if let ready { continuation.resume(returning: ready) }
            }
            feed.counted(items)
            return items
        }

        /// The stream is over: unregistered, and anything queued dropped.
        func cancel() {
            let waiter = queue.withLock { queue -> CheckedContinuation<[Item], Never>? in
                queue.ended = true
                queue.items.removeAll()
                return queue.takeWaiting()
            }
            waiter?.resume(returning: [.closing])
            feed.unsubscribe(self)
        }
    }
}

/// The feed's series on `/metrics`.
private struct FeedMetrics: Sendable {
    let subscribers = Metrics.Gauge(label: "sse_subscribers")
    let eventsSent = Metrics.Counter(label: "sse_events_sent_total")
    let resyncs = Metrics.Counter(label: "sse_resyncs_total")
    let dropped = Metrics.Counter(label: "sse_subscribers_dropped_total")
}
