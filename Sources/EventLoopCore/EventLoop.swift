import CLibEvent
import Glibc

/// One libevent `event_base` driven by one dedicated thread; other threads hand it work through
/// `execute`, which is the only call that is safe off the loop thread (it wakes the loop with
/// `event_active`, as libevent allows once `evthread_use_pthreads()` has run).
///
/// It is also a `TaskExecutor`: a task started with `Task(executorPreference: loop)` runs its
/// code on the loop thread, so a handler, the socket it answers and the database connection it
/// uses can all live on one thread with no hop between them.
public final class EventLoop: TaskExecutor, @unchecked Sendable {  // `base` and its events are used only on the loop thread; `mailbox` is behind a lock
    /// The libevent base; used only on this loop's thread, and only by this module.
    let base: OpaquePointer
    /// The name of the loop thread, for debuggers and logs.
    public let name: String
    /// The internal event that `execute` activates to wake the loop.
    private var wakeEvent: OpaquePointer?
    /// Work queued by other threads, and whether a wake-up is already pending.
    private let mailbox = LockedValue<Mailbox>(Mailbox())
    private let started = LockedValue(false)
    /// Set once the loop thread has finished; resumes whoever waits in `stop()`.
    private let finished = LockedValue<FinishState>(.running([]))

    private struct Mailbox {
        var work: [Work] = []
        var wakePending = false
    }

    /// A closure from `execute` or a job of a task that prefers this loop, run in arrival order.
    private enum Work {
        case closure(@Sendable () -> Void)
        case job(UnownedJob)
    }

    private enum FinishState {
        case running([CheckedContinuation<Void, Never>])
        case finished
    }

    /// Makes libevent thread-aware; must run before the first `event_base_new`. Idempotent.
    public static func enableThreading() {
        _ = threadingEnabled
    }

    private static let threadingEnabled: Bool = {
        precondition(evthread_use_pthreads() == 0, "evthread_use_pthreads failed")
        return true
    }()

    public init(name: String) {
        Self.enableThreading()
        guard let base = event_base_new() else { preconditionFailure("event_base_new failed") }
        self.base = base
        self.name = name
        let context = Unmanaged.passUnretained(self).toOpaque()
        self.wakeEvent = event_new(base, -1, 0, { _, _, context in
            Unmanaged<EventLoop>.fromOpaque(context!).takeUnretainedValue().runMailbox()
        }, context)
    }

    deinit {
        if let wakeEvent { event_free(wakeEvent) }
        event_base_free(base)
    }

    /// Starts the loop thread (once; later calls do nothing). The loop runs until `stop()`.
    public func start() {
        let first = started.withLock { started -> Bool in
            defer { started = true }
            return !started
        }
        guard first else { return }
        spawnThread(name: name) { [self] in
            pthread_setspecific(currentLoopKey, Unmanaged.passUnretained(self).toOpaque())
            event_base_loop(self.base, EVLOOP_NO_EXIT_ON_EMPTY)
            self.runMailbox()
            let waiters = self.finished.withLock { state -> [CheckedContinuation<Void, Never>] in
                guard case .running(let waiters) = state else { return [] }
                state = .finished
                return waiters
            }
            waiters.forEach { $0.resume() }
            pthread_setspecific(currentLoopKey, nil)
        }
    }

    /// The loop whose thread is the calling thread, if any.
    public static var current: EventLoop? {
        guard let pointer = pthread_getspecific(currentLoopKey) else { return nil }
        return Unmanaged<EventLoop>.fromOpaque(pointer).takeUnretainedValue()
    }

    /// True on this loop's own thread.
    public var isInLoopThread: Bool {
        pthread_getspecific(currentLoopKey) == Unmanaged.passUnretained(self).toOpaque()
    }

    /// Runs `work` on the loop thread, soon. Safe from any thread.
    public func execute(_ work: @escaping @Sendable () -> Void) {
        post(.closure(work))
    }

    /// `TaskExecutor`: runs the job on the loop thread, in order with `execute`d work.
    public func enqueue(_ job: consuming ExecutorJob) {
        post(.job(UnownedJob(job)))
    }

    /// Runs `work` now when called on the loop thread, else posts it like `execute`.
    public func runOnLoop(_ work: @escaping @Sendable () -> Void) {
        if isInLoopThread {
            work()
        } else {
            post(.closure(work))
        }
    }

    private func post(_ work: Work) {
        let needsWake = mailbox.withLock { box -> Bool in
            box.work.append(work)
            if box.wakePending { return false }
            box.wakePending = true
            return true
        }
        if needsWake, let wakeEvent {
            event_active(wakeEvent, Int32(EV_READ), 0)
        }
    }

    /// Runs `work` on the loop thread after `delay`; call only on the loop thread.
    public func schedule(after delay: Duration, _ work: @escaping () -> Void) {
        once(descriptor: -1, Int16(EV_TIMEOUT), timeout: LoopTimeout(delay), work)
    }

    /// Runs `work` once when `descriptor` is ready for `interest`; call only on the loop thread.
    public func whenReady(_ descriptor: Int32, for interest: IOInterest, _ work: @escaping () -> Void) {
        once(descriptor: descriptor, interest.flags, timeout: nil, work)
    }

    private func once(descriptor: Int32, _ flags: Int16, timeout: LoopTimeout?, _ work: @escaping () -> Void) {
        let box = Unmanaged.passRetained(ClosureBox(work)).toOpaque()
        let callback: event_callback_fn = { _, _, context in
            Unmanaged<ClosureBox>.fromOpaque(context!).takeRetainedValue().work()
        }
        if var interval = timeout?.interval {
            event_base_once(base, descriptor, flags, callback, box, &interval)
        } else {
            event_base_once(base, descriptor, flags, callback, box, nil)
        }
    }

    /// `duration` as one of this loop's common timeouts (see `LoopTimeout`); call before the
    /// loop starts or on its thread.
    public func commonTimeout(_ duration: Duration) -> LoopTimeout {
        var interval = timeval(duration)
        return LoopTimeout(interval: event_base_init_common_timeout(base, &interval)?.pointee ?? interval)
    }

    /// Stops the loop after the work queued so far and waits until its thread has finished.
    public func stop() async {
        execute { [self] in event_base_loopbreak(self.base) }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let resumeNow = finished.withLock { state -> Bool in
                guard case .running(var waiters) = state else { return true }
                waiters.append(continuation)
                state = .running(waiters)
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }

    /// Runs everything queued by `execute` and `enqueue`, in order.
    private func runMailbox() {
        let work = mailbox.withLock { box -> [Work] in
            box.wakePending = false
            var taken: [Work] = []
            swap(&taken, &box.work)
            return taken
        }
        let executor = asUnownedTaskExecutor()
        for item in work {
            switch item {
            case .closure(let closure): closure()
            case .job(let job): job.runSynchronously(on: executor)
            }
        }
    }
}

/// The thread-local slot that holds the loop running on the current thread.
private let currentLoopKey: pthread_key_t = {
    var key = pthread_key_t()
    precondition(pthread_key_create(&key, nil) == 0, "pthread_key_create failed")
    return key
}()

/// Runs `body` on a new detached pthread named `name` (Foundation's `Thread` would bring
/// Dispatch's `fd_set`, which clashes with libevent's headers).
private func spawnThread(name: String, _ body: @escaping () -> Void) {
    let box = Unmanaged.passRetained(ClosureBox {
        clibevent_name_current_thread(String(name.prefix(15)))
        body()
    }).toOpaque()
    var thread = pthread_t()
    let status = pthread_create(&thread, nil, { context in
        Unmanaged<ClosureBox>.fromOpaque(context!).takeRetainedValue().work()
        return nil
    }, box)
    precondition(status == 0, "pthread_create failed: \(status)")
    pthread_detach(thread)
}

/// A closure kept alive while libevent (or a new thread) holds it.
private final class ClosureBox {
    let work: () -> Void
    init(_ work: @escaping () -> Void) { self.work = work }
}

extension timeval {
    /// A `timeval` for a Swift `Duration` (negative durations become zero).
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        if seconds < 0 || (seconds == 0 && attoseconds < 0) {
            self.init(tv_sec: 0, tv_usec: 0)
        } else {
            self.init(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
        }
    }
}
