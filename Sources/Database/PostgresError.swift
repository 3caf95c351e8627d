/// What went wrong talking to PostgreSQL, typed so callers can tell a bad value from a lost
/// connection from a busy pool.
public struct PostgresError: Error, Sendable, CustomStringConvertible, Equatable {
    public enum Kind: String, Sendable, Equatable, CaseIterable {
        /// The connection could not be opened.
        case connectFailed
        /// Opening the connection took longer than the configured deadline.
        case connectTimeout
        /// The connection broke while in use.
        case connectionLost
        /// PostgreSQL answered with an error (see `sqlState`).
        case server
        /// A bound value cannot be sent (a string with a NUL byte, say).
        case invalidValue
        /// A column could not be read as the requested type.
        case decoding
        /// No connection became free within the acquire timeout.
        case poolTimeout
        /// The queue of requests waiting for a connection is full.
        case poolQueueFull
        /// PostgreSQL is unreachable; the pool fails fast until it reconnects.
        case unavailable
        /// The pool is shutting down.
        case poolClosed
        /// The query had no answer within the query timeout; it was cancelled on the server.
        case queryTimeout
        /// Every connection that could run the statement is stalled behind a blocked one.
        case stalled
        /// The connection answered something other than what was asked (a result nobody asked
        /// for, a result of another shape, a segment check that did not match): it was closed,
        /// and nothing it answered reached the caller.
        case protocolViolation
    }

    public let kind: Kind
    public let message: String
    /// The five-character SQLSTATE for `.server` errors (and lost connections that sent one).
    public let sqlState: String?
    public let detail: String?

    public init(_ kind: Kind, _ message: String, sqlState: String? = nil, detail: String? = nil) {
        self.kind = kind
        self.message = message
        self.sqlState = sqlState
        self.detail = detail
    }

    /// SQLSTATE class 22: the data did not fit (bad encoding, value too long, out of range…).
    public var isDataError: Bool { sqlState?.hasPrefix("22") ?? false }
    /// Integrity constraint violations (class 23): not-null, check, foreign key, unique.
    public var isConstraintViolation: Bool { sqlState?.hasPrefix("23") ?? false }
    /// True when retrying later may succeed: the database or the pool is unavailable right now.
    public var isTransient: Bool {
        switch kind {
        case .connectFailed, .connectTimeout, .connectionLost, .poolTimeout, .poolQueueFull, .unavailable, .poolClosed,
             .queryTimeout, .stalled, .protocolViolation:
            return true
        case .server:
            // 08: connection exception; 53: insufficient resources; 57P: operator intervention;
            // 57014: a statement cancelled (by this server's query timeout) or timed out;
            // 42P05: a PREPARE met a statement of that name that another client of a transaction
            // pooler left in the backend, and the pipeline aborted with it (nothing after it ran).
            return sqlState.map { $0.hasPrefix("08") || $0.hasPrefix("53") || $0.hasPrefix("57") || $0 == "42P05" } ?? false
        case .invalidValue, .decoding:
            return false
        }
    }

    public var description: String {
        var text = "\(kind.rawValue): \(message)"
        if let sqlState { text += " [\(sqlState)]" }
        if let detail { text += " (\(detail))" }
        return text
    }
}
