import Database
import EventLoopCore
import Foundation
import Testing
@testable import App

/// Shared reads (`CoalescedReads`, `BatchedLookup`) with a read in memory whose progress the
/// test controls: every caller gets a value read after it asked, and a failure because the
/// database is unavailable reaches those who waited for it without a second wait.
@Suite("Coalesced reads (pure)")
struct CoalescedReadTests {
    /// Reads that count how many have started, each answering its own number.
    final class CountingReads: Sendable {
        let started = LockedValue(0)
        let running = LockedValue((now: 0, most: 0))
        let pause: Duration
        init(pause: Duration) { self.pause = pause }

        func read() async throws -> Int {
            let number = started.withLock { $0 += 1; return $0 }
            running.withLock { $0.now += 1; $0.most = max($0.most, $0.now) }
            try await Task.sleep(for: pause)
            running.withLock { $0.now -= 1 }
            return number
        }
    }

    @Test func callersShareReadsThatStartAfterTheyAskedAndKeysReadApart() async throws {
        let reads = CountingReads(pause: .milliseconds(20))
        let shared = CoalescedReads<String, Int> { _ in try await reads.read() }
        let outcomes = try await withThrowingTaskGroup(of: (asked: Int, got: Int).self) { group in
            for index in 0..<200 {
                group.addTask {
                    try await Task.sleep(for: .milliseconds(index % 50))
                    let asked = reads.started.withLock { $0 }
                    return (asked, try await shared.value(for: index % 2 == 0 ? "a" : "b"))
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(outcomes.allSatisfy { $0.got > $0.asked }, "a read that started after the caller asked")
        let started = reads.started.withLock { $0 }
        #expect(started < 100, "\(started) reads for 200 callers")
        #expect(reads.running.withLock { $0.most } == 2, "one read per key at a time, the two keys at once")
    }

    @Test func waitersOfAReadThatFoundTheDatabaseUnavailableGetItsErrorAtOnce() async throws {
        let calls = LockedValue(0)
        let shared = CoalescedRead<Int> {
            calls.withLock { $0 += 1 }
            try await Task.sleep(for: .milliseconds(100))
            throw PostgresError(.queryTimeout, "stuck")
        }
        let started = ContinuousClock.now
        let first = Task { try await shared.value() }
        try await Task.sleep(for: .milliseconds(20))
        let second = Task { try await shared.value() }
        await #expect(throws: PostgresError.self) { try await first.value }
        await #expect(throws: PostgresError.self) { try await second.value }
        #expect(ContinuousClock.now - started < .milliseconds(180), "the waiter did not wait for a second read")
        #expect(calls.withLock { $0 } == 1)
        // The next caller after the failure reads again.
        await #expect(throws: PostgresError.self) { try await shared.value() }
        #expect(calls.withLock { $0 } == 2)
    }

    @Test func lookupsAreBatchedUnderLoadBoundedAndEachGetsItsOwnRow() async throws {
        let batches = LockedValue<[[Int]]>([])
        let reads = CountingReads(pause: .milliseconds(10))
        let lookup = BatchedLookup<String>(maxReads: 3, maxBatch: 16) { ids in
            batches.withLock { $0.append(ids) }
            _ = try await reads.read()
            return Dictionary(uniqueKeysWithValues: ids.filter { $0 % 10 != 0 }.map { ($0, "task \($0)") })
        }
        let answers = try await withThrowingTaskGroup(of: (Int, String?).self) { group in
            for id in 1...300 { group.addTask { (id, try await lookup.value(for: id)) } }
            return try await group.reduce(into: [:]) { $0[$1.0] = $1.1 }
        }
        for id in 1...300 { #expect(answers[id] == (id % 10 == 0 ? nil : "task \(id)")) }
        let seen = batches.withLock { $0 }
        #expect(seen.count < 300 && seen.allSatisfy { $0.count <= 16 }, "\(seen.count) reads")
        #expect(reads.running.withLock { $0.most } <= 3)
        // Alone, a lookup reads at once, by itself.
        #expect(try await lookup.value(for: 7) == "task 7")
        #expect(batches.withLock { $0.last } == [7])
    }

    @Test func lookupsWaitingBehindAStuckReadFailWithIt() async throws {
        let lookup = BatchedLookup<Int>(maxReads: 1, maxBatch: 16) { _ in
            try await Task.sleep(for: .milliseconds(100))
            throw PostgresError(.stalled, "stuck")
        }
        let started = ContinuousClock.now
        let first = Task { try await lookup.value(for: 1) }
        try await Task.sleep(for: .milliseconds(20))
        let waiting = (2...5).map { id in Task { try await lookup.value(for: id) } }
        await #expect(throws: PostgresError.self) { try await first.value }
        for task in waiting { await #expect(throws: PostgresError.self) { try await task.value } }
        #expect(ContinuousClock.now - started < .milliseconds(180))
    }
}
