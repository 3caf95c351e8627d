import Glibc

/// A value behind a `pthread_mutex_t`. (Not `Synchronization.Mutex`: its futex-based lock is
/// invisible to ThreadSanitizer, which then reports every access it guards as a race.)
public final class LockedValue<Value>: @unchecked Sendable {  // `value` is only touched while `mutex` is held
    private var mutex = pthread_mutex_t()
    private var value: Value

    public init(_ value: Value) {
        self.value = value
        pthread_mutex_init(&mutex, nil)
    }

    deinit { pthread_mutex_destroy(&mutex) }

    public func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return try body(&value)
    }
}
