import Server

/// `GET /api/events`: the change feed as server-sent events (HTML Living Standard §9.2). Each
/// event has an `id:` (`<process>-<n>`, increasing), an `event:` name and one `data:` line; a
/// `Last-Event-ID` the feed still holds resumes after it, any other gets `resync` first. A
/// comment line is sent every `SSE_HEARTBEAT_S`; at shutdown the stream ends with a `retry:`
/// hint. Open-ended: each part must be taken within `HTTP_TIMEOUT_S`, not the whole stream.
struct EventRoutes: Sendable {
    let feed: EventFeed
    /// What `retry:` tells a client to wait before reconnecting, in milliseconds.
    let reconnectMilliseconds: Int

    func register(on router: inout Router) {
        router.add(.get, "/api/events") { try events($0) }
    }

    func events(_ request: HTTPRequest) throws -> HTTPResponse {
        let topics = try Self.topics(request.query["topics"])
        guard let subscriber = feed.subscribe(topics: topics, lastEventID: request.headers["Last-Event-ID"]) else {
            throw Saturated(message: "Too many event streams are open, try again shortly")
        }
        // Ends the subscription when the answer goes, written or not (HEAD runs no producer).
        let subscription = Subscription(subscriber)
        let retry = Array("retry: \(reconnectMilliseconds)\n\n".utf8)
        var response = HTTPResponse(
            status: 200, headers: HTTPHeaders([("Content-Type", "text/event-stream"), ("X-Accel-Buffering", "no")])
        ) { writer in
            let subscriber = subscription.subscriber
            try await writer.write(retry)
            while true {
                // What is queued goes out in one write; a heartbeat only when nothing else does.
                var bytes: [UInt8] = []
                var ended = false
                for item in await subscriber.next() {
                    switch item {
                    case .event(let event): bytes += event.frame
                    case .heartbeat: if bytes.isEmpty { bytes = Self.heartbeat }
                    case .resync: bytes += Self.resync
                    case .overflowed: bytes += Self.resync; ended = true
                    case .closing: bytes += retry; ended = true
                    }
                    if ended { break }
                }
                try await writer.write(bytes)
                if ended { return }
            }
        }
        response.bodyStreamIsOpenEnded = true
        return response
    }

    /// `topics=tasks,settings` (either or both); without it, both. Anything else is a 400.
    static func topics(_ text: String?) throws -> Set<EventFeed.Topic> {
        guard let text else { return Set(EventFeed.Topic.allCases) }
        var topics: Set<EventFeed.Topic> = []
        for name in text.split(separator: ",", omittingEmptySubsequences: false) {
            guard let topic = EventFeed.Topic(rawValue: String(name)) else {
                throw APIError.badRequest("topics must be tasks, settings or both, separated by a comma")
            }
            topics.insert(topic)
        }
        return topics
    }

    static let heartbeat = Array(": heartbeat\n\n".utf8)
    static let resync = Array("event: resync\ndata: {}\n\n".utf8)

    /// A subscriber, cancelled when the last reference to it goes.
    private final class Subscription: Sendable {
        let subscriber: EventFeed.Subscriber
        init(_ subscriber: EventFeed.Subscriber) { self.subscriber = subscriber }
        deinit { subscriber.cancel() }
    }
}
