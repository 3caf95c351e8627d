import Foundation
import Testing
@testable import App

/// `BatchQueue`: what the event relay's listener callback hands to the relay.
@Suite("Batch queue (pure)")
struct BatchQueueTests {
    @Test func itemsPushedFromManyThreadsComeOutOnceInEachPushersOrder() async {
        let queue = BatchQueue<Int>(capacity: 100_000)
        let pushers = 8, each = 5000
        let consumer = Task {
            var taken: [Int] = []
            var batches = 0
            while taken.count < pushers * each, let batch = await queue.next() {
                taken += batch
                batches += 1
            }
            return (taken, batches)
        }
        DispatchQueue.concurrentPerform(iterations: pushers) { pusher in
            for index in 0..<each { #expect(queue.push(pusher * each + index)) }
        }
        let (taken, batches) = await consumer.value
        #expect(taken.count == pushers * each && Set(taken).count == taken.count)
        for pusher in 0..<pushers {
            let mine = taken.filter { $0 / each == pusher }
            #expect(mine == mine.sorted())
        }
        #expect(batches < pushers * each, "taken in batches, not one by one")
    }

    @Test func aFullQueueRefusesAndAFinishedOneDrainsThenEnds() async {
        let queue = BatchQueue<Int>(capacity: 3)
        #expect(queue.push(1) && queue.push(2) && queue.push(3))
        #expect(!queue.push(4), "beyond capacity")
        queue.finish()
        #expect(!queue.push(5), "finished")
        #expect(await queue.next() == [1, 2, 3])
        #expect(await queue.next() == nil)
    }

    @Test func aWaitingConsumerIsWokenByAPushAndEndedByCancellation() async throws {
        let queue = BatchQueue<String>(capacity: 10)
        let first = Task { await queue.next() }
        try await Task.sleep(for: .milliseconds(50))
        #expect(queue.push("a"))
        #expect(await first.value == ["a"])
        let waiting = Task { await queue.next() }
        try await Task.sleep(for: .milliseconds(50))
        waiting.cancel()
        #expect(await waiting.value == nil)
    }
}
