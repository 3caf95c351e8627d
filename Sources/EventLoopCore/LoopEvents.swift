import CLibEvent
import Glibc

// The only registrations with libevent outside `EventLoop` itself: a descriptor watched for
// reading or writing, a timer, a trigger fired later in the same turn, and a listening socket.
// Each owns one libevent event and the closure it calls, is made and used on its loop's thread
// only, and frees the event when cancelled or released (on that thread).

/// What a watched descriptor waits for.
public enum IOInterest: Sendable {
    case read
    case write

    var flags: Int16 { Int16(self == .read ? EV_READ : EV_WRITE) }
}

/// A descriptor watched for one kind of readiness: `arm()` starts watching, `disarm()` stops.
/// A persistent watcher stays armed after it fires; a one-shot one is disarmed before its handler
/// runs.
public final class IOWatcher {
    private var event: OpaquePointer?
    private var handler: (() -> Void)?
    private let persistent: Bool
    /// Whether the event is registered with the loop.
    public private(set) var isArmed = false

    /// Nil when libevent cannot make the event (out of memory).
    public init?(loop: EventLoop, descriptor: Int32, interest: IOInterest, persistent: Bool = true, _ handler: @escaping () -> Void) {
        self.handler = handler
        self.persistent = persistent
        let flags = interest.flags | Int16(persistent ? EV_PERSIST : 0)
        event = event_new(loop.base, descriptor, flags, { _, _, context in
            let watcher = Unmanaged<IOWatcher>.fromOpaque(context!).takeUnretainedValue()
            withExtendedLifetime(watcher) { watcher.fired() }
        }, Unmanaged.passUnretained(self).toOpaque())
        guard event != nil else { return nil }
    }

    deinit { cancel() }

    private func fired() {
        if !persistent { isArmed = false }
        handler?()
    }

    public func arm() {
        guard !isArmed, let event else { return }
        event_add(event, nil)
        isArmed = true
    }

    public func disarm() {
        guard isArmed, let event else { return }
        event_del(event)
        isArmed = false
    }

    /// Frees the event and drops the handler (and what it holds); nothing fires after this.
    public func cancel() {
        if let event { event_free(event) }
        event = nil
        handler = nil
        isArmed = false
    }
}

/// A timer on one loop: `arm(after:)` (re)starts it, `disarm()` stops it. A repeating timer
/// fires every interval it was armed with until disarmed.
public final class LoopTimer {
    private var event: OpaquePointer?
    private var handler: (() -> Void)?

    public init?(loop: EventLoop, repeating: Bool = false, _ handler: @escaping () -> Void) {
        self.handler = handler
        event = event_new(loop.base, -1, Int16(repeating ? EV_PERSIST : 0), { _, _, context in
            let timer = Unmanaged<LoopTimer>.fromOpaque(context!).takeUnretainedValue()
            withExtendedLifetime(timer) { timer.handler?() }
        }, Unmanaged.passUnretained(self).toOpaque())
        guard event != nil else { return nil }
    }

    deinit { cancel() }

    /// Fires `timeout` from now, replacing any earlier arming.
    public func arm(after timeout: LoopTimeout) {
        guard let event else { return }
        var interval = timeout.interval
        event_add(event, &interval)
    }

    public func arm(after delay: Duration) {
        arm(after: LoopTimeout(delay))
    }

    public func disarm() {
        if let event { event_del(event) }
    }

    public func cancel() {
        if let event { event_free(event) }
        event = nil
        handler = nil
    }
}

/// Runs its handler once later in the loop's current turn, however often it is fired before:
/// work that should wait until the turn has issued everything it will (a batch's closing sync).
public final class LoopTrigger {
    private var event: OpaquePointer?
    private var handler: (() -> Void)?

    public init?(loop: EventLoop, _ handler: @escaping () -> Void) {
        self.handler = handler
        event = event_new(loop.base, -1, 0, { _, _, context in
            let trigger = Unmanaged<LoopTrigger>.fromOpaque(context!).takeUnretainedValue()
            withExtendedLifetime(trigger) { trigger.handler?() }
        }, Unmanaged.passUnretained(self).toOpaque())
        guard event != nil else { return nil }
    }

    deinit { cancel() }

    public func fire() {
        if let event { event_active(event, 0, 0) }
    }

    public func cancel() {
        if let event { event_free(event) }
        event = nil
        handler = nil
    }
}

/// A timer interval. One made by `EventLoop.commonTimeout` is one of the loop's common timeouts:
/// timers of equal length sit in a queue instead of the timer heap (cheap to arm many of).
public struct LoopTimeout: Sendable {
    let interval: timeval

    public init(_ duration: Duration) {
        interval = timeval(duration)
    }

    init(interval: timeval) {
        self.interval = interval
    }
}

/// A listening socket on one loop: `onAccept` gets every accepted descriptor (non-blocking,
/// close-on-exec), `onError` the errno of a failed accept. Enabled when made.
public final class SocketListener {
    private var listener: OpaquePointer?
    private let onAccept: (Int32) -> Void
    private let onError: (Int32) -> Void

    /// Nil when libevent cannot listen on `socket`.
    public init?(loop: EventLoop, socket: Int32, onAccept: @escaping (Int32) -> Void, onError: @escaping (Int32) -> Void) {
        self.onAccept = onAccept
        self.onError = onError
        let context = Unmanaged.passUnretained(self).toOpaque()
        listener = evconnlistener_new(loop.base, { _, socket, _, _, context in
            let listener = Unmanaged<SocketListener>.fromOpaque(context!).takeUnretainedValue()
            withExtendedLifetime(listener) { listener.onAccept(socket) }
        }, context, LEV_OPT_CLOSE_ON_EXEC, 0, socket)
        guard let listener else { return nil }
        // Without an error callback, a failing accept (EMFILE) leaves the socket readable and
        // the loop spinning on it.
        evconnlistener_set_error_cb(listener) { _, context in
            let listener = Unmanaged<SocketListener>.fromOpaque(context!).takeUnretainedValue()
            withExtendedLifetime(listener) { listener.onError(errno) }
        }
    }

    deinit { cancel() }

    public func enable() {
        if let listener { evconnlistener_enable(listener) }
    }

    public func disable() {
        if let listener { evconnlistener_disable(listener) }
    }

    /// Stops listening (the socket itself stays open).
    public func cancel() {
        if let listener { evconnlistener_free(listener) }
        listener = nil
    }
}

/// Makes `socket` non-blocking; false when `fcntl` fails.
@discardableResult
public func makeNonBlocking(_ socket: Int32) -> Bool {
    let flags = fcntl(socket, F_GETFL, 0)
    return flags >= 0 && fcntl(socket, F_SETFL, flags | O_NONBLOCK) == 0
}

/// CLOCK_MONOTONIC_COARSE in nanoseconds: a few nanoseconds to read, a few milliseconds fine,
/// which is all connection and statement deadlines need.
public func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC_COARSE, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}
