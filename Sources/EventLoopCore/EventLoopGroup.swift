/// A fixed set of event loops shared by the HTTP server and the database pool, so a request's
/// socket, its handler and its database connection can all be served by one thread.
public final class EventLoopGroup: Sendable {
    public let loops: [EventLoop]

    /// Creates `count` loops (at least one) named `prefix-0`, `prefix-1`…; call `start()` next.
    public init(count: Int, namePrefix: String) {
        loops = (0..<max(1, count)).map { EventLoop(name: "\(namePrefix)-\($0)") }
    }

    public func start() {
        for loop in loops { loop.start() }
    }

    /// Stops every loop after the work queued so far.
    public func stop() async {
        for loop in loops { await loop.stop() }
    }

    /// The index of the loop running the calling thread, if it is one of this group's.
    public var currentIndex: Int? {
        guard let current = EventLoop.current else { return nil }
        return loops.firstIndex { $0 === current }
    }
}
