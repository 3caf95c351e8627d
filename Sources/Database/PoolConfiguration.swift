/// Settings of a `ConnectionPool`; every limit is explicit.
public struct PoolConfiguration: Sendable {
    /// What libpq accepts: `postgresql://user:pass@host:port/db` or `host=… dbname=…`.
    public var conninfo: String
    /// Shown in `pg_stat_activity.application_name`.
    public var applicationName: String
    public var maxConnections: Int
    public var minConnections: Int
    public var maxWaiters: Int
    public var acquireTimeout: Duration
    public var connectTimeout: Duration
    public var initialBackoff: Duration
    public var maxBackoff: Duration
    /// Most single-statement queries pipelined on one connection at once (1: no pipelining).
    public var pipelineDepth: Int
    /// The same for lookups (one-row reads), which cost PostgreSQL little each: under many
    /// concurrent requests they can go deeper into the pipelines instead of waiting for the pool
    /// (by default no deeper: lookups stacked behind a statement blocked on a lock wait until
    /// the stall is noticed, so a deep pipeline makes a locked table cost other tables more).
    public var lookupPipelineDepth: Int
    /// Longest a statement may take (queueing on its connection included) before it is
    /// answered `.queryTimeout` and cancelled on the server.
    public var queryTimeout: Duration
    /// How long a connection with statements in flight may go without any result before it
    /// counts as stalled and gets no new work.
    public var stallThreshold: Duration
    /// The server is reached through a transaction pooler (PgBouncer's `pool_mode =
    /// transaction`), whose backends change hands between transactions: statements are parsed
    /// unnamed, never prepared, and each connection keeps one transaction on the wire at a time.
    public var transactionPooling: Bool

    public init(
        conninfo: String, applicationName: String = "task-management", maxConnections: Int = 8,
        minConnections: Int = 1, maxWaiters: Int = PoolConfiguration.defaultMaxWaiters, acquireTimeout: Duration = .seconds(2),
        connectTimeout: Duration = .seconds(5), initialBackoff: Duration = .milliseconds(100),
        maxBackoff: Duration = .seconds(5), pipelineDepth: Int = 16, lookupPipelineDepth: Int = 16,
        queryTimeout: Duration = .seconds(5), stallThreshold: Duration = .seconds(1), transactionPooling: Bool = false
    ) {
        self.conninfo = conninfo
        self.applicationName = applicationName
        self.maxConnections = maxConnections
        self.minConnections = minConnections
        self.maxWaiters = maxWaiters
        self.acquireTimeout = acquireTimeout
        self.connectTimeout = connectTimeout
        self.initialBackoff = initialBackoff
        self.maxBackoff = maxBackoff
        self.pipelineDepth = max(1, pipelineDepth)
        self.lookupPipelineDepth = max(self.pipelineDepth, lookupPipelineDepth)
        self.queryTimeout = queryTimeout
        self.stallThreshold = stallThreshold
        self.transactionPooling = transactionPooling
    }

    /// Requests that may wait for a connection by default.
    public static let defaultMaxWaiters = 4096
}

/// A point-in-time view of the pool, for readiness checks and tests.
public struct PoolStatistics: Sendable, Equatable {
    public var open: Int
    public var inUse: Int
    public var idle: Int
    public var waiting: Int
    public var connecting: Int
    public var reachable: Bool
    /// Connections whose statements stopped making progress (kept out of use).
    public var stalled: Int = 0
}
