import EventLoopCore

/// Lets one occurrence through per `interval` and counts the others, so that a failure hitting
/// every request (tens of thousands a second) writes a log line a second, not one per request.
final class LogThrottle: Sendable {
    private let interval: Duration
    private let state = LockedValue<(last: ContinuousClock.Instant?, suppressed: Int)>((nil, 0))

    init(interval: Duration) {
        self.interval = interval
    }

    /// How many occurrences were held back since the last one let through, or nil when this one
    /// is held back.
    func admit(at now: ContinuousClock.Instant = .now) -> Int? {
        state.withLock { state in
            if let last = state.last, now - last < interval {
                state.suppressed += 1
                return nil
            }
            defer { state = (now, 0) }
            return state.suppressed
        }
    }
}
