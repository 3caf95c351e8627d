import EventLoopCore
import Logging

/// One dedicated connection that LISTENs on a channel, outside the request pool: opened on the
/// pool's connector and driven on one of its loops like any other, pinged every
/// `pingInterval` (a connection that died silently is noticed), and opened again after it
/// drops, with a backoff that doubles up to the pool's `maxBackoff`. Notifications sent while it
/// was away are lost: each new connection reports `.listening` again, so the caller knows when
/// to tell its own subscribers to catch up.
public final class NotificationListener: Sendable {
    /// What the listener reports, in order, from any thread.
    public enum Event: Sendable {
        /// LISTEN is in effect on a new connection (the first, or one after a drop).
        case listening
        case notification(String)
        /// The connection dropped or could not be opened; another attempt follows.
        case lost(PostgresError)
    }

    private let run: Task<Void, Never>

    init(
        configuration: PoolConfiguration, channel: String, loop: EventLoop, connector: EventLoop, canceller: EventLoop,
        pingInterval: Duration, logger: Logger, onEvent: @escaping @Sendable (Event) -> Void
    ) {
        precondition(channel.utf8.allSatisfy { ($0 >= 97 && $0 <= 122) || $0 == 95 }, "a channel is a lower-case identifier")
        run = Task {
            var backoff = configuration.initialBackoff
            while !Task.isCancelled {
                // The first loss of this connection, and who waits for it (whichever comes first).
                let loss = LockedValue<(waiter: CheckedContinuation<PostgresError, Never>?, error: PostgresError?)>((nil, nil))
                let onLost: @Sendable (PostgresError) -> Void = { error in
                    let waiter = loss.withLock { state -> CheckedContinuation<PostgresError, Never>? in
                        guard state.error == nil else { return nil }
                        state.error = error
                        defer { state.waiter = nil }
                        return state.waiter
                    }
                    waiter?.resume(returning: error)
                }
                do {
                    let connection = try await PostgresConnection.connect(
                        id: -1, conninfo: configuration.conninfo, applicationName: configuration.applicationName + " listener",
                        timeout: configuration.connectTimeout, loop: loop, starter: connector,
                        deadlines: .init(queryTimeout: configuration.queryTimeout, stallThreshold: configuration.stallThreshold, maxInFlight: PostgresConnection.inFlightPerDepth + 8),
                        transactionPooled: false, canceller: canceller,
                        onStall: { _ in }, onUnexpectedClose: onLost, onNotification: { onEvent(.notification($0)) }
                    )
                    do {
                        _ = try await connection.simpleQuery("LISTEN \(channel)")
                    } catch {
                        connection.close()
                        throw error
                    }
                    backoff = configuration.initialBackoff
                    onEvent(.listening)
                    let pinger = Task {
                        while !Task.isCancelled {
                            try? await Task.sleep(for: pingInterval)
                            if Task.isCancelled { return }
                            do {
                                _ = try await connection.simpleQuery("SELECT 1")
                            } catch {
                                onLost(error as? PostgresError ?? PostgresError(.connectionLost, "\(error)"))
                                return
                            }
                        }
                    }
                    let error = await withTaskCancellationHandler {
                        await withCheckedContinuation { continuation in
                            let early = loss.withLock { state -> PostgresError? in
                                if state.error == nil { state.waiter = continuation }
                                return state.error
                            }
                            if let early { continuation.resume(returning: early) }
                        }
                    } onCancel: {
                        onLost(PostgresError(.poolClosed, "the listener stopped"))
                    }
                    pinger.cancel()
                    connection.close()
                    if Task.isCancelled { return }
                    logger.warning("notification listener lost its connection", metadata: ["error": "\(error)"])
                    onEvent(.lost(error))
                } catch {
                    if Task.isCancelled { return }
                    let failure = error as? PostgresError ?? PostgresError(.connectFailed, "\(error)")
                    logger.warning("notification listener could not connect", metadata: ["error": "\(failure)"])
                    onEvent(.lost(failure))
                }
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, configuration.maxBackoff)
            }
        }
    }

    /// Stops listening and closes the connection.
    public func stop() {
        run.cancel()
    }
}

extension ConnectionPool {
    /// A listener on `channel` (a lower-case identifier the caller owns, never client input)
    /// with this pool's settings, loops and helper threads, connecting to `conninfo` (the pool's
    /// own when nil: a transaction pooler cannot carry a LISTEN); it runs until `stop()`.
    public nonisolated func listen(
        channel: String, conninfo: String? = nil, pingInterval: Duration,
        onEvent: @escaping @Sendable (NotificationListener.Event) -> Void
    ) -> NotificationListener {
        var configuration = configuration
        if let conninfo { configuration.conninfo = conninfo }
        return NotificationListener(
            configuration: configuration, channel: channel, loop: loops.loops[0], connector: connector, canceller: canceller,
            pingInterval: pingInterval, logger: logger, onEvent: onEvent
        )
    }
}
