import Foundation

/// Where the server listens and the limits it enforces on every connection.
public struct ServerConfiguration: Sendable {
    public var host: String
    /// The TCP port; 0 asks the kernel for a free one (see `HTTPServer.port`).
    public var port: Int
    /// How many event-loop threads accept and serve connections.
    public var eventLoops: Int
    /// Larger request bodies are answered 413 and never buffered whole.
    public var maxBodyBytes: Int
    /// A request line plus headers larger than this is answered 431.
    public var maxHeaderBytes: Int
    /// Longest a connection may stall while reading a request or writing a response.
    public var timeout: Duration
    /// After answering an error, how long to keep reading (and discarding) what the client still
    /// sends, so that closing does not reset the connection before the answer is read.
    public var lingerTimeout: Duration
    /// `listen()` backlog.
    public var backlog: Int
    /// Unsent answer bytes beyond which a connection reads no further pipelined requests until
    /// the client catches up.
    public var maxPendingOutputBytes: Int
    /// Unparsed bytes a connection keeps in its input buffer while a request is being answered
    /// (pipelined requests); beyond this it stops reading the socket until it catches up.
    public var maxPendingInputBytes: Int
    /// The most a connection takes from its socket in one `recv` (one buffer of this size per loop).
    public var readBufferBytes: Int
    /// Most client connections open at once; at the limit the server stops accepting (the
    /// kernel's backlog holds the rest) and resumes when one closes.
    public var maxConnections: Int
    /// Seconds a client is told to wait (`Retry-After`) before retrying a 503.
    public var retryAfterSeconds: Int

    public init(
        host: String = "0.0.0.0", port: Int = 5555, eventLoops: Int = availableCPUs(),
        maxBodyBytes: Int = 1_048_576, maxHeaderBytes: Int = 16_384,
        timeout: Duration = .seconds(30), lingerTimeout: Duration = .seconds(2), backlog: Int = 1024,
        maxPendingOutputBytes: Int = 256 * 1024, maxPendingInputBytes: Int = 64 * 1024,
        readBufferBytes: Int = 64 * 1024, maxConnections: Int = defaultMaxConnections(), retryAfterSeconds: Int = 1
    ) {
        self.host = host
        self.port = port
        self.eventLoops = eventLoops
        self.maxBodyBytes = maxBodyBytes
        self.maxHeaderBytes = maxHeaderBytes
        self.timeout = timeout
        self.lingerTimeout = lingerTimeout
        self.backlog = backlog
        self.maxPendingOutputBytes = maxPendingOutputBytes
        self.maxPendingInputBytes = maxPendingInputBytes
        self.readBufferBytes = max(1, readBufferBytes)
        self.maxConnections = max(1, maxConnections)
        self.retryAfterSeconds = retryAfterSeconds
    }
}

/// Descriptors kept out of the connection budget: the listening socket, PostgreSQL
/// connections, libevent's own, logs, files a scrape or a test may open.
public let reservedDescriptors = 256

/// Ceiling of the default connection limit, whatever the descriptor limit allows.
public let maxDefaultConnections = 16_384

/// The default for `maxConnections`: what the open-file limit leaves after
/// `reservedDescriptors`, and no more than half of a cgroup memory limit (a Kubernetes
/// memory limit) spent on idle connections of `idleConnectionBytes` each.
public func defaultMaxConnections(
    idleConnectionBytes: Int = 8192, memoryLimitFile: String = "/sys/fs/cgroup/memory.max"
) -> Int {
    var limit = rlimit()
    var connections = maxDefaultConnections
    if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur != rlim_t.max {
        connections = min(connections, Int(limit.rlim_cur) - reservedDescriptors)
    }
    if let text = try? String(contentsOfFile: memoryLimitFile, encoding: .utf8),
       let bytes = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) {
        connections = min(connections, bytes / 2 / idleConnectionBytes)
    }
    return max(64, connections)
}

/// Raises this process's soft open-file limit to its hard limit (a server holds a descriptor
/// per client); returns the soft limit now in force.
@discardableResult
public func raiseOpenFileLimit() -> Int {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 0 }
    if limit.rlim_cur < limit.rlim_max {
        var raised = limit
        raised.rlim_cur = limit.rlim_max
        if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
    }
    return limit.rlim_cur == rlim_t.max ? Int.max : Int(limit.rlim_cur)
}

/// The CPUs this process may use: the smaller of the scheduler affinity and the cgroup v2 quota
/// (`/sys/fs/cgroup/cpu.max`, set by a Kubernetes CPU limit), never below 1.
public func availableCPUs(cgroupFile: String = "/sys/fs/cgroup/cpu.max") -> Int {
    var cpus = ProcessInfo.processInfo.activeProcessorCount
    if let quota = cgroupCPUQuota(path: cgroupFile) {
        cpus = min(cpus, quota)
    }
    return max(1, cpus)
}

/// Whole CPUs allowed by a cgroup v2 `cpu.max` file ("max 100000" or "150000 100000"), rounded up.
func cgroupCPUQuota(path: String) -> Int? {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
    return parseCPUMax(text)
}

/// Parses the text of `cpu.max`; nil when there is no quota.
public func parseCPUMax(_ text: String) -> Int? {
    let fields = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
    guard fields.count >= 2, let quota = Double(fields[0]), let period = Double(fields[1]), period > 0 else {
        return nil
    }
    return max(1, Int((quota / period).rounded(.up)))
}
