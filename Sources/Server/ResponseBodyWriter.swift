import EventLoopCore

/// Where a streamed body goes (`HTTPResponse.bodyStream`): each `write` hands bytes to the
/// connection's loop and returns once the connection holds no more than its output bound, so a
/// slow client slows the producer instead of growing the server's memory.
public final class ResponseBodyWriter: Sendable {
    private let loop: EventLoop
    private let sink: @Sendable ([UInt8], CheckedContinuation<Void, Error>) -> Void

    init(loop: EventLoop, sink: @escaping @Sendable ([UInt8], CheckedContinuation<Void, Error>) -> Void) {
        self.loop = loop
        self.sink = sink
    }

    /// Sends `bytes` as the body's next part (nothing for none). Throws `ResponseStreamClosed`
    /// once the connection is gone (the client left, or was too slow for the write deadline).
    public func write(_ bytes: [UInt8]) async throws {
        guard !bytes.isEmpty else { return }
        try await withCheckedThrowingContinuation { continuation in
            loop.runOnLoop { self.sink(bytes, continuation) }
        }
    }
}

/// The connection a streamed body was going to is closed.
public struct ResponseStreamClosed: Error, CustomStringConvertible {
    public var description: String { "the client connection closed before the answer was written" }
}
