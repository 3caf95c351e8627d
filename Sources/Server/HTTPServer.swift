import EventLoopCore
import Glibc
import Logging
import Synchronization

/// An HTTP/1.1 server: N event loops (each a thread with its own `event_base`) accept from one
/// listening socket and pass every request to one `HTTPResponder`.
public final class HTTPServer: Sendable {
    private enum State {
        case idle
        case running(port: Int, socket: Int32)
        case draining
        case stopped
    }

    private let context: ServerContext
    private let group: EventLoopGroup
    /// The server made `group` itself, so it stops it at shutdown.
    private let ownsGroup: Bool
    private let loops: [ServerLoop]
    private let state = LockedValue<State>(.idle)

    /// A server on `eventLoops` (shared with others, e.g. the database pool, and left running at
    /// shutdown), or on `configuration.eventLoops` loops of its own when nil.
    public init(configuration: ServerConfiguration, responder: any HTTPResponder, logger: Logger, eventLoops: EventLoopGroup? = nil) {
        let context = ServerContext(responder: responder, configuration: configuration, logger: logger)
        self.context = context
        group = eventLoops ?? EventLoopGroup(count: configuration.eventLoops, namePrefix: "http-loop")
        ownsGroup = eventLoops == nil
        loops = group.loops.map { ServerLoop(loop: $0, context: context) }
        for loop in loops { loop.peers = loops }
    }

    /// The port the server listens on (the kernel's choice when configured as 0).
    public var port: Int {
        state.withLock { state in
            if case .running(let port, _) = state { return port }
            return 0
        }
    }

    /// Binds the port and starts the loops; requests are served when this returns.
    public func start() throws {
        try state.withLock { state in
            guard case .idle = state else { throw ServerError.alreadyStarted }
            signal(SIGPIPE, SIG_IGN)
            let configuration = context.configuration
            let socket = try makeListeningSocket(host: configuration.host, port: configuration.port, backlog: configuration.backlog)
            let port: Int
            do {
                port = try boundPort(of: socket)
            } catch {
                _ = Glibc.close(socket)
                throw error
            }
            group.start()
            for loop in loops {
                loop.loop.execute { loop.listen(on: socket) }
            }
            state = .running(port: port, socket: socket)
            context.logger.info("listening", metadata: ["host": "\(context.configuration.host)", "port": "\(port)", "loops": "\(loops.count)"])
        }
    }

    /// Stops accepting, lets requests in flight finish for up to `gracePeriod`, then closes every
    /// connection and stops the loops. Returns when all of that is done.
    public func shutdown(gracePeriod: Duration) async {
        let listeningSocket = state.withLock { state -> Int32? in
            guard case .running(_, let socket) = state else { return nil }
            state = .draining
            return socket
        }
        guard let listeningSocket else { return }
        context.beginDraining()
        for loop in loops { await loop.stopAccepting() }
        _ = Glibc.close(listeningSocket)
        let deadline = ContinuousClock.now + gracePeriod
        while ContinuousClock.now < deadline {
            var open = 0
            for loop in loops { open += await loop.closeIdleConnections() }
            if open == 0 { break }
            try? await Task.sleep(for: Self.drainPollInterval)
        }
        for loop in loops { await loop.closeAllConnections() }
        if ownsGroup { await group.stop() }
        state.withLock { $0 = .stopped }
        context.logger.info("server stopped")
    }

    /// How often a draining server looks for connections that became idle.
    static let drainPollInterval = Duration.milliseconds(10)

    /// Requests read whole whose answer has not been written yet.
    public var requestsInFlight: Int { context.inFlight.load(ordering: .relaxed) }
}

/// Why the server could not start.
public struct ServerError: Error, CustomStringConvertible {
    public let description: String
    static let alreadyStarted = ServerError(description: "the server was already started")
}

// MARK: - Shared state

/// What every connection of one server shares: the responder, the limits, the logger, counters.
final class ServerContext: Sendable {
    let responder: any HTTPResponder
    let configuration: ServerConfiguration
    let logger: Logger
    let requestIDs = RequestIDGenerator()
    /// Requests whose handler started and whose answer is not queued yet, across all loops.
    let inFlight = Atomic<Int>(0)
    /// Counts accepted connections, to hand them to the loops in turn.
    let accepted = Atomic<Int>(0)
    /// Connections open across all loops (at most `configuration.maxConnections`).
    let openConnections = Atomic<Int>(0)
    /// True while the connection limit is reached: every loop's listener is disabled, and the
    /// kernel's backlog holds new connections until one closes.
    let atConnectionLimit = Atomic<Bool>(false)
    private let draining = Atomic<Bool>(false)

    init(responder: any HTTPResponder, configuration: ServerConfiguration, logger: Logger) {
        self.responder = responder
        self.configuration = configuration
        self.logger = logger
    }

    var isDraining: Bool { draining.load(ordering: .relaxed) }
    func beginDraining() { draining.store(true, ordering: .relaxed) }
    func requestStarted() { inFlight.add(1, ordering: .relaxed) }
    func requestFinished() { inFlight.subtract(1, ordering: .relaxed) }
}

// MARK: - One loop

/// One event loop's listener and the connections it accepted.
final class ServerLoop: @unchecked Sendable {  // `listener`, `connections`, `dateHeader` and the bytes of `readBuffer` are touched only on `loop`'s thread; `peers` is set before the loops start and only read after
    let loop: EventLoop
    let context: ServerContext
    /// Every loop of the server, this one included: accepted connections are spread over them
    /// in turn (a burst of connects would otherwise land on whichever loop woke first).
    var peers: [ServerLoop] = []
    private var listener: SocketListener?
    /// Whether `listener` is enabled (it is disabled at the connection limit and after EMFILE).
    private var listening = false
    /// Set after `accept` failed for lack of descriptors or memory, until the retry delay ends.
    private var acceptBackingOff = false
    private var connections: [ObjectIdentifier: HTTPConnection] = [:]
    /// The connections' read and write timeout, as a libevent common timeout (equal timeouts kept
    /// in a queue rather than the timer heap).
    let ioTimeout: LoopTimeout
    /// How long a connection lingers after its last answer (a common timeout as well).
    let lingerTimeout: LoopTimeout
    /// Where this loop's connections `recv` into before keeping the bytes.
    let readBuffer: UnsafeMutableRawBufferPointer
    /// The `Date` line of this loop's answers.
    let dateHeader = HTTPDateHeader()

    init(loop: EventLoop, context: ServerContext) {
        self.loop = loop
        self.context = context
        ioTimeout = loop.commonTimeout(context.configuration.timeout)
        lingerTimeout = loop.commonTimeout(context.configuration.lingerTimeout)
        readBuffer = .allocate(byteCount: context.configuration.readBufferBytes, alignment: 16)
    }

    deinit {
        readBuffer.deallocate()
    }

    func listen(on socket: Int32) {
        listener = SocketListener(
            loop: loop, socket: socket, onAccept: { [unowned self] in accept($0) }, onError: { [unowned self] in acceptFailed($0) }
        )
        guard listener != nil else {
            context.logger.critical("cannot listen on the socket", metadata: ["loop": "\(loop.name)"])
            return
        }
        listening = true
        updateListening()
    }

    /// `accept` failed. Out of descriptors or memory: pause this listener for a moment (the
    /// backlog keeps the clients) instead of retrying at once; anything else is logged.
    private func acceptFailed(_ code: Int32) {
        context.logger.warning("accept failed", metadata: ["error": "\(String(cString: strerror(code)))"])
        guard code == EMFILE || code == ENFILE || code == ENOBUFS || code == ENOMEM else { return }
        acceptBackingOff = true
        updateListening()
        loop.schedule(after: Self.acceptRetryDelay) { [self] in
            acceptBackingOff = false
            updateListening()
        }
    }

    /// How long a listener rests after `accept` ran out of descriptors or memory.
    static let acceptRetryDelay = Duration.milliseconds(100)

    /// Enables or disables this loop's listener to match the connection limit and back-off.
    private func updateListening() {
        guard let listener else { return }
        let wanted = !acceptBackingOff && !context.atConnectionLimit.load(ordering: .relaxed) && !context.isDraining
        guard wanted != listening else { return }
        listening = wanted
        if wanted { listener.enable() } else { listener.disable() }
    }

    /// Tells every loop to re-check its listener (the limit flag changed).
    private func updateAllListeners() {
        for peer in peers {
            if peer === self { updateListening() } else { peer.loop.execute { peer.updateListening() } }
        }
    }

    private func accept(_ socket: Int32) {
        // At the limit every listener is disabled; this one at once (libevent then stops its
        // accept loop), the others when their loops next turn. A loop that accepts in that
        // moment sees the count and disables itself too, so the limit is passed by at most
        // one connection per other loop, and nobody who got through is refused.
        let limit = context.configuration.maxConnections
        let open = context.openConnections.wrappingAdd(1, ordering: .relaxed).newValue
        if open >= limit {
            if !context.atConnectionLimit.exchange(true, ordering: .relaxed) {
                context.logger.warning("connection limit reached; not accepting until one closes", metadata: ["limit": "\(limit)"])
                updateAllListeners()
            } else {
                updateListening()
            }
        }
        let target = peers.isEmpty ? self : peers[context.accepted.wrappingAdd(1, ordering: .relaxed).oldValue % peers.count]
        if target === self {
            adopt(socket)
        } else {
            target.loop.execute { target.adopt(socket) }
        }
    }

    /// Serves an accepted socket on this loop.
    private func adopt(_ socket: Int32) {
        guard !context.isDraining else {
            _ = Glibc.close(socket)
            connectionGone()
            return
        }
        makeNonBlocking(socket)
        var one: Int32 = 1
        setsockopt(socket, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        let connection = HTTPConnection(owner: self, socket: socket)
        connections[ObjectIdentifier(connection)] = connection
        connection.start()
    }

    func connectionClosed(_ connection: HTTPConnection) {
        connections[ObjectIdentifier(connection)] = nil
        connectionGone()
    }

    /// One accepted socket fewer; below the limit, the listeners resume.
    private func connectionGone() {
        let open = context.openConnections.wrappingSubtract(1, ordering: .relaxed).newValue
        if open < context.configuration.maxConnections,
           context.atConnectionLimit.compareExchange(expected: true, desired: false, ordering: .relaxed).exchanged {
            updateAllListeners()
        }
    }

    /// Frees this loop's listener (the shared socket stays open); returns once done.
    func stopAccepting() async {
        await withCheckedContinuation { continuation in
            loop.execute { [self] in
                listener?.cancel()
                listener = nil
                listening = false
                continuation.resume()
            }
        }
    }

    /// Closes idle connections; returns how many are still busy. Call off the loop thread.
    func closeIdleConnections() async -> Int {
        await withCheckedContinuation { continuation in
            loop.execute { [self] in
                for connection in Array(connections.values) { _ = connection.closeIfIdle() }
                continuation.resume(returning: connections.count)
            }
        }
    }

    /// Closes every connection of this loop; returns once done.
    func closeAllConnections() async {
        await withCheckedContinuation { continuation in
            loop.execute { [self] in
                for connection in Array(connections.values) { connection.close() }
                continuation.resume()
            }
        }
    }
}

// MARK: - Sockets

/// A non-blocking listening TCP socket with `SO_REUSEADDR` (not `SO_REUSEPORT`, so a port that
/// another server holds is an error rather than silently shared).
private func makeListeningSocket(host: String, port: Int, backlog: Int) throws -> Int32 {
    var hints = addrinfo()
    hints.ai_family = AF_UNSPEC
    hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
    var result: UnsafeMutablePointer<addrinfo>?
    let status = getaddrinfo(host, String(port), &hints, &result)
    guard status == 0, let info = result else {
        throw ServerError(description: "cannot resolve \(host): \(String(cString: gai_strerror(status)))")
    }
    defer { freeaddrinfo(result) }
    let fd = socket(info.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw ServerError(description: "socket: \(String(cString: strerror(errno)))") }
    var one: Int32 = 1
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    guard bind(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 else {
        let message = String(cString: strerror(errno))
        _ = Glibc.close(fd)
        throw ServerError(description: "cannot bind \(host):\(port): \(message)")
    }
    guard Glibc.listen(fd, Int32(backlog)) == 0 else {
        let message = String(cString: strerror(errno))
        _ = Glibc.close(fd)
        throw ServerError(description: "listen: \(message)")
    }
    makeNonBlocking(fd)
    return fd
}

/// The port a bound socket got.
private func boundPort(of fd: Int32) throws -> Int {
    var storage = sockaddr_storage()
    var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
    let ok = withUnsafeMutablePointer(to: &storage) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) == 0 }
    }
    guard ok else { throw ServerError(description: "getsockname: \(String(cString: strerror(errno)))") }
    switch Int32(storage.ss_family) {
    case AF_INET:
        return withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin_port)) } }
    case AF_INET6:
        return withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin6_port)) } }
    default:
        throw ServerError(description: "unexpected address family")
    }
}
