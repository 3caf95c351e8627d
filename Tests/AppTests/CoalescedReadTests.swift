import EventLoopCore
import Testing
@testable import App

/// `CoalescedRead`: shared reads, never a value read before the caller asked.
@Suite("Coalesced reads (pure)")
struct CoalescedReadTests {
    struct Failure: Error {}

    /// Counts one more read; its number.
    static func next(_ counter: LockedValue<Int>) -> Int {
        counter.withLock { count -> Int in
            count += 1
            return count
        }
    }

    @Test func everyCallerGetsAValueReadAfterItAskedAndReadsAreShared() async throws {
        let started = LockedValue(0)
        let coalesced = CoalescedRead<Int> {
            let number = Self.next(started)
            try await Task.sleep(for: .milliseconds(2))
            return number
        }
        let callers = 400
        try await withThrowingTaskGroup(of: Void.self) { group in
            for caller in 0..<callers {
                group.addTask {
                    if caller % 7 == 0 { try await Task.sleep(for: .milliseconds(caller % 5)) }
                    let readsBefore = started.withLock { $0 }
                    let value = try await coalesced.value()
                    #expect(value > readsBefore, "a read that started before the caller asked answered it")
                }
            }
            try await group.waitForAll()
        }
        let reads = started.withLock { $0 }
        #expect(reads >= 1 && reads < callers / 4, "\(reads) reads for \(callers) callers")
    }

    @Test func aFailedReadFailsItsGroupAndTheNextReadRunsAfresh() async throws {
        let attempt = LockedValue(0)
        let coalesced = CoalescedRead<Int> {
            let number = Self.next(attempt)
            if number == 1 { throw Failure() }
            return number
        }
        await #expect(throws: Failure.self) { try await coalesced.value() }
        #expect(try await coalesced.value() == 2)
    }
}
