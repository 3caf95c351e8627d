import CLibPQ
import Glibc

// Small pieces of libpq plumbing: starting a connection, its error text, cancel requests.

/// Starts a connection with `PQconnectStartParams` (which may block resolving a host name).
func startConnection(conninfo: String, applicationName: String) -> OpaquePointer? {
    // TCP keepalives and a user timeout come first, so the caller's conninfo can override them:
    // a peer that vanishes (a black-holed network) is noticed in about ten seconds, not hours.
    let keywords = ["keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout",
                    "dbname", "application_name", "client_encoding"]
    let values = ["1", "5", "2", "3", "10000", conninfo, applicationName, "UTF8"]
    return withCStringArray(keywords) { keys in
        withCStringArray(values) { vals in PQconnectStartParams(keys, vals, 1) }
    }
}

/// A connection just started on the connector thread, on its way to its loop.
struct StartedConnection: @unchecked Sendable {  // handed from the connector thread to the loop; only one of them uses it at a time
    let pointer: OpaquePointer?
    init(_ pointer: OpaquePointer?) { self.pointer = pointer }
}

/// One connect attempt's completion, called once (by success, failure or the deadline).
final class ConnectAttempt {
    var done = false
    let completion: (Result<Void, Error>) -> Void
    init(completion: @escaping (Result<Void, Error>) -> Void) { self.completion = completion }
}

/// A `PGcancel` on its way to the canceller thread, used and freed there once.
final class CancelRequest: @unchecked Sendable {  // made on the loop, then touched only by the canceller thread
    private let handle: OpaquePointer

    init(_ handle: OpaquePointer) { self.handle = handle }

    /// Sends the cancel request (blocks until the server takes it) and frees the handle.
    func send() {
        var message = [CChar](repeating: 0, count: 256)
        _ = PQcancel(handle, &message, Int32(message.count))
        PQfreeCancel(handle)
    }
}


/// libpq's message for the connection's last error, without the trailing newline.
func errorMessage(_ connection: OpaquePointer) -> String {
    String(cString: PQerrorMessage(connection)).trimmingTrailingWhitespace()
}

/// Calls `body` with a NULL-terminated array of C strings.
func withCStringArray<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    let copies = strings.map { strdup($0) }
    defer { copies.forEach { free($0) } }
    var pointers: [UnsafePointer<CChar>?] = copies.map { UnsafePointer($0) }
    pointers.append(nil)
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}
