import EventLoopCore
import Foundation
import Testing
@testable import App

/// The feed's rounds without a database: an event published while a round runs is handed over
/// by the next round at the latest, whatever the interleaving.
@Suite("Event feed rounds (pure)")
struct EventFeedRoundTests {
    @Test func anEventPublishedWhileRoundsRunIsHandedOverByTheNextRound() async throws {
        let feed = EventFeed(limits: .init())
        let subscriber = try #require(feed.subscribe(topics: [.tasks], lastEventID: nil))
        // Rounds as fast as they come, on another thread, racing every publish.
        let stop = LockedValue(false)
        let rounds = Thread { while !stop.withLock({ $0 }) { feed.flush() } }
        rounds.start()
        defer { stop.withLock { $0 = true } }
        var late = 0
        for round in 0..<2000 {
            let next = Task { await subscriber.next() }
            try await Task.sleep(for: .microseconds(50))  // the stream is waiting for its items
            feed.publish([.init(name: "task.created", topic: .tasks, data: Array("\(round)".utf8))])
            feed.flush()
            // The round just run hands the event over; a stream still waiting after 1 s never got it.
            let watchdog = Task {
                try await Task.sleep(for: .seconds(1))
                subscriber.cancel()
            }
            let items = await next.value
            watchdog.cancel()
            guard case .event = items.first else {
                late += 1
                break
            }
        }
        #expect(late == 0, "an event waited past the round after it was published")
    }
}
