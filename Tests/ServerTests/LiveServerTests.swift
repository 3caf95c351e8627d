import Foundation
import Logging
import Synchronization
import Testing
import TestSupport
@testable import Server

/// A responder for the live tests: echo, slow, and id routes.
struct TestResponder: HTTPResponder {
    let router: Router

    init() {
        var router = Router(logger: Logger(label: "test"))
        router.addImmediate(.get, "/healthz") { _ in .json(200, Array("{\"status\":\"ok\"}\n".utf8)) }
        router.add(.post, "/echo") { request in HTTPResponse(status: 200, body: request.body) }
        router.add(.get, "/id/:id") { request in
            let delay = Int(request.query["delay_ms"] ?? "0") ?? 0
            if delay > 0 { try await Task.sleep(for: .milliseconds(delay)) }
            return HTTPResponse(status: 200, body: Array("id=\(request.parameters["id"]!)".utf8))
        }
        router.add(.get, "/request-id") { request in HTTPResponse(status: 200, body: Array(request.requestID.utf8)) }
        // `parts` parts of `size` bytes (each part's index mod 10 as a digit), streamed; each write
        // counted in `StreamProbe`; `fail=1` throws after the first part.
        router.add(.get, "/stream") { request in
            let parts = Int(request.query["parts"] ?? "3") ?? 3
            let size = Int(request.query["size"] ?? "5") ?? 5
            let fail = request.query["fail"] == "1"
            return HTTPResponse(status: 200, headers: HTTPHeaders([("Content-Type", "text/plain")])) { writer in
                do {
                    for index in 0..<parts {
                        try await writer.write([UInt8](repeating: UInt8(ascii: "0") + UInt8(index % 10), count: size))
                        StreamProbe.written.add(1, ordering: .relaxed)
                        if fail { throw TestClientError("the producer failed") }
                    }
                } catch {
                    StreamProbe.failed.add(1, ordering: .relaxed)
                    throw error
                }
            }
        }
        self.router = router
    }

    func answer(_ request: HTTPRequest) -> HTTPAnswer { router.answer(request) }
}

/// What the `/stream` route's producers did, for the tests that watch them.
enum StreamProbe {
    static let written = Atomic<Int>(0)
    static let failed = Atomic<Int>(0)
}

/// Starts a server on port 0 and stops it after `body`.
func withServer(
    _ configure: (inout ServerConfiguration) -> Void = { _ in },
    _ body: (HTTPServer, Int) async throws -> Void
) async throws {
    var configuration = ServerConfiguration(host: "127.0.0.1", port: 0, eventLoops: 2)
    configure(&configuration)
    let server = HTTPServer(configuration: configuration, responder: TestResponder(), logger: Logger(label: "test"))
    try server.start()
    do {
        try await body(server, server.port)
    } catch {
        await server.shutdown(gracePeriod: .seconds(1))
        throw error
    }
    await server.shutdown(gracePeriod: .seconds(1))
}

@Suite("HTTP server on live sockets")
struct LiveServerTests {
    @Test func healthzOverASocket() async throws {
        try await withServer { _, port in
            let response = try await httpRequest(port: port, "GET", "/healthz")
            #expect(response.status == 200)
            #expect(response.text == "{\"status\":\"ok\"}\n")
            #expect(response.header("Content-Type") == "application/json")
            #expect(response.header("X-Request-ID") != nil)
            let date = try #require(response.header("Date"))
            let now = Int(Date().timeIntervalSince1970)
            #expect([now - 1, now, now + 1].map { HTTPDateHeader.imfFixdate(secondsSince1970: $0) }.contains(date))
        }
    }

    @Test func theDateHeaderIsIMFFixdate() {
        // RFC 9110 §5.6.7's own example, and a day and month of each length around a leap day.
        #expect(HTTPDateHeader.imfFixdate(secondsSince1970: 784_111_777) == "Sun, 06 Nov 1994 08:49:37 GMT")
        #expect(HTTPDateHeader.imfFixdate(secondsSince1970: 0) == "Thu, 01 Jan 1970 00:00:00 GMT")
        #expect(HTTPDateHeader.imfFixdate(secondsSince1970: 1_709_251_199) == "Thu, 29 Feb 2024 23:59:59 GMT")
        let line = String(decoding: HTTPDateHeader().current(), as: UTF8.self)
        #expect(line.hasPrefix("Date: ") && line.hasSuffix(" GMT\r\n") && line.utf8.count == 37)
    }

    @Test func keepAliveServesManyRequestsOnOneConnection() async throws {
        try await withServer { _, port in
            try await offCooperativePool {
                let connection = try RawConnection(port: port)
                for index in 0..<20 {
                    try connection.send("GET /id/\(index) HTTP/1.1\r\nHost: x\r\n\r\n")
                    let response = try connection.readResponse()
                    #expect(response.text == "id=\(index)")
                    #expect(response.header("Connection") == nil)
                }
                // An error answer on a request read whole leaves the connection usable.
                try connection.send("POST /nowhere HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc")
                #expect(try connection.readResponse().status == 404)
                try connection.send("GET /id/x HTTP/1.1\r\nHost: t\r\n\r\n")
                #expect(try connection.readResponse().text == "id=x")
            }
        }
    }

    @Test func aStreamedBodyIsChunkedAndTheConnectionServesTheNextRequest() async throws {
        try await withServer { _, port in
            try await offCooperativePool {
                let connection = try RawConnection(port: port)
                try connection.send("GET /stream?parts=3&size=5 HTTP/1.1\r\nHost: t\r\n\r\nHEAD /stream HTTP/1.1\r\nHost: t\r\n\r\nGET /id/7 HTTP/1.1\r\nHost: t\r\n\r\n")
                let streamed = try connection.readResponse()
                #expect(streamed.status == 200)
                #expect(streamed.header("Transfer-Encoding") == "chunked")
                #expect(streamed.header("Content-Length") == nil)
                #expect(streamed.text == "000001111122222")
                // HEAD: the head a GET gets, no body, no producer run.
                let head = try connection.readResponse(headOnly: true)
                #expect(head.status == 200 && head.header("Transfer-Encoding") == "chunked" && head.body.isEmpty)
                #expect(try connection.readResponse().text == "id=7")
            }
        }
    }

    @Test func aStreamedBodyToAnHTTP10ClientEndsWithTheConnection() async throws {
        try await withServer { _, port in
            try await offCooperativePool {
                let connection = try RawConnection(port: port)
                try connection.send("GET /stream?parts=2&size=4 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                let text = String(decoding: try connection.readBodyUntilClose(), as: UTF8.self)
                #expect(text.hasPrefix("HTTP/1.1 200 OK\r\n"))
                #expect(text.contains("Connection: close\r\n"))
                #expect(!text.lowercased().contains("content-length") && !text.lowercased().contains("transfer-encoding"))
                #expect(text.hasSuffix("\r\n\r\n00001111"))
            }
        }
    }

    @Test func aProducerThatFailsCutsTheBodyShortWithAReset() async throws {
        try await withServer { _, port in
            try await offCooperativePool {
                let connection = try RawConnection(port: port)
                try connection.send("GET /stream?parts=3&size=5&fail=1 HTTP/1.1\r\nHost: t\r\n\r\n")
                #expect(throws: TestClientError.self, "no last chunk: the client cannot take it for the whole body") {
                    try connection.readResponse()
                }
            }
        }
    }

    @Test func aClientThatDoesNotReadHoldsItsProducerAtTheOutputBoundAndLeavingStopsIt() async throws {
        try await withServer({ $0.maxPendingOutputBytes = 64 * 1024 }) { _, port in
            let writtenBefore = StreamProbe.written.load(ordering: .relaxed)
            let failedBefore = StreamProbe.failed.load(ordering: .relaxed)
            try await offCooperativePool {
                let connection = try RawConnection(port: port, receiveBuffer: 4096)
                // 1 GiB in 16 KiB parts, which the client never reads.
                try connection.send("GET /stream?parts=65536&size=16384 HTTP/1.1\r\nHost: t\r\n\r\n")
                usleep(1_000_000)
                let written = StreamProbe.written.load(ordering: .relaxed) - writtenBefore
                // The output bound plus what the kernel's socket buffers hold (a few MiB at most).
                #expect(written > 0 && written < 512, "\(written) parts written to a client that reads nothing")
                usleep(300_000)
                #expect(StreamProbe.written.load(ordering: .relaxed) - writtenBefore == written, "the producer waits")
            }
            // The client left: the waiting write throws, and the producer ends.
            for _ in 0..<100 where StreamProbe.failed.load(ordering: .relaxed) == failedBefore {
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(StreamProbe.failed.load(ordering: .relaxed) == failedBefore + 1)
        }
    }

    @Test func pipelinedRequestsAreAnsweredInOrder() async throws {
        try await withServer { _, port in
            try await offCooperativePool {
                let connection = try RawConnection(port: port)
                var batch = ""
                for index in 0..<10 { batch += "GET /id/\(index)?delay_ms=\((10 - index) * 5) HTTP/1.1\r\nHost: t\r\n\r\n" }
                try connection.send(batch)
                for index in 0..<10 { #expect(try connection.readResponse().text == "id=\(index)") }
            }
        }
    }

    @Test func aClientThatShutsItsSideAfterPipeliningGetsEveryAnswer() async throws {
        try await withServer { _, port in
            try await offCooperativePool {
                // Immediate and awaited routes, the end of input arriving while a handler runs.
                let connection = try RawConnection(port: port)
                try connection.send("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\nGET /id/1?delay_ms=50 HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\nGET /id/2 HTTP/1.1\r\nHost: t\r\n\r\n")
                connection.shutdownWrite()
                #expect(try connection.readResponse().status == 200)
                #expect(try connection.readResponse().text == "id=1")
                #expect(try connection.readResponse().status == 200)
                #expect(try connection.readResponse().text == "id=2")
                #expect(connection.isClosedByPeer())

                // One request and the end of input: the answer says it closes, and it does.
                let single = try RawConnection(port: port)
                try single.send("GET /id/3?delay_ms=20 HTTP/1.1\r\nHost: t\r\n\r\n")
                single.shutdownWrite()
                let answer = try single.readResponse()
                #expect(answer.text == "id=3")
                #expect(answer.header("Connection") == "close")
                #expect(single.isClosedByPeer())

                // An unfinished request after a whole one: the whole one is answered, then close.
                let partial = try RawConnection(port: port)
                try partial.send("GET /id/4 HTTP/1.1\r\nHost: t\r\n\r\nGET /id/5 HTTP/1.1\r\nHost: x")
                partial.shutdownWrite()
                #expect(try partial.readResponse().text == "id=4")
                #expect(partial.isClosedByPeer())
            }
        }
    }

    @Test func aClientPipeliningWithoutReadingIsThrottledAndStillAnsweredInOrder() async throws {
        // Small buffers, so that both the input bound (reading stops) and the output bound
        // (no further requests are parsed) are reached long before the client reads anything,
        // and requests arrive split over several `recv`s.
        try await withServer({ $0.maxPendingInputBytes = 4096; $0.maxPendingOutputBytes = 4096; $0.readBufferBytes = 512 }) { _, port in
            let connection = try RawConnection(port: port)
            let count = 1500
            let body = String(repeating: "x", count: 200)
            // The sender only sends and the reader only reads: the socket is used from two
            // threads, but no state of `connection` is shared between them.
            async let sent: Void = offCooperativePool {
                var batch = ""
                for index in 0..<count { batch += "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: \(body.count + 6)\r\n\r\n\(String(format: "%06d", index))\(body)" }
                try connection.send(batch)
            }
            try await Task.sleep(for: .milliseconds(300))
            let answers = try await offCooperativePool {
                try (0..<count).map { _ in try connection.readResponse().text }
            }
            try await sent
            #expect(answers.count == count)
            #expect(answers.enumerated().allSatisfy { $0.element == String(format: "%06d", $0.offset) + body })
        }
    }

    /// Handling has a deadline like every other state: a handler that overruns the timeout gets
    /// its client a 503 (and a closed connection), never an answer that does not come.
    @Test func aHandlerSlowerThanTheTimeoutIsAnswered503() async throws {
        try await withServer({ $0.timeout = .milliseconds(300) }) { _, port in
            try await offCooperativePool {
                let connection = try RawConnection(port: port)
                try connection.send("GET /id/7?delay_ms=700 HTTP/1.1\r\nHost: t\r\n\r\n")
                let started = ContinuousClock.now
                let response = try connection.readResponse()
                #expect(response.status == 503)
                #expect(response.header("Retry-After") == "1")
                #expect(response.header("Connection") == "close")
                #expect(ContinuousClock.now - started < .milliseconds(650))
                // A handler within the timeout on a new connection is answered as usual.
                let next = try RawConnection(port: port)
                try next.send("GET /id/8?delay_ms=100 HTTP/1.1\r\nHost: t\r\n\r\n")
                #expect(try next.readResponse().text == "id=8")
            }
        }
    }

    @Test func http10AndConnectionClose() async throws {
        try await withServer { _, port in
            try await offCooperativePool {
                let old = try RawConnection(port: port)
                try old.send("GET /healthz HTTP/1.0\r\n\r\n")
                let response = try old.readResponse()
                #expect(response.status == 200)
                #expect(response.header("Connection") == "close")
                #expect(old.isClosedByPeer())

                let kept = try RawConnection(port: port)
                try kept.send("GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                #expect(try kept.readResponse().header("Connection") == "keep-alive")
                try kept.send("GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                #expect(try kept.readResponse().status == 200)

                let closing = try RawConnection(port: port)
                try closing.send("GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                #expect(try closing.readResponse().header("Connection") == "close")
                #expect(closing.isClosedByPeer())
            }
        }
    }

    @Test func limitsAnswer413And431AndTheServerStaysUp() async throws {
        try await withServer({ $0.maxBodyBytes = 1000; $0.maxHeaderBytes = 1024 }) { _, port in
            let large = try await httpRequest(port: port, "POST", "/echo", body: [UInt8](repeating: 65, count: 1001))
            #expect(large.status == 413)
            #expect(large.header("Content-Type") == "application/json")
            let fits = try await httpRequest(port: port, "POST", "/echo", body: [UInt8](repeating: 65, count: 1000))
            #expect(fits.status == 200)
            #expect(fits.body.count == 1000)
            let headers = try await httpRequest(port: port, "GET", "/healthz", headers: [("X-Big", String(repeating: "b", count: 2000))])
            #expect(headers.status == 431)
            #expect(headers.header("Date") != nil, "answers refused before routing carry a Date too")
            try await offCooperativePool {
                let bad = try RawConnection(port: port)
                try bad.send("THIS IS NOT HTTP\r\n\r\n")
                #expect(try bad.readResponse().status == 400)
            }
            #expect(try await httpRequest(port: port, "GET", "/healthz").status == 200)
        }
    }

    @Test func chunkedAndExpectContinueBodies() async throws {
        try await withServer { _, port in
            try await offCooperativePool {
                let connection = try RawConnection(port: port)
                try connection.send("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
                #expect(try connection.readResponse().text == "abcde")
                try connection.send("POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
                try connection.send("hi")
                #expect(try connection.readResponse().text == "hi")
            }
        }
    }

    @Test func aStalledClientDoesNotBlockOthersAndIsDropped() async throws {
        // A server blocked by the stalled client would answer the other one only after the
        // 3 s timeout; 2 s leaves room for a busy test machine.
        try await withServer({ $0.timeout = .seconds(3) }) { _, port in
            let stalled = try RawConnection(port: port)
            try stalled.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nab")
            let start = ContinuousClock.now
            #expect(try await httpRequest(port: port, "GET", "/healthz").status == 200)
            #expect(ContinuousClock.now - start < .seconds(2))
            let answer = try await offCooperativePool { try stalled.readResponse() }
            #expect(answer.status == 408)
            #expect(try await offCooperativePool { stalled.isClosedByPeer() })
        }
    }

    @Test func aThousandConcurrentRequestsOverTwoHundredConnections() async throws {
        try await withServer { _, port in
            try await withThrowingTaskGroup(of: Int.self) { group in
                for connectionIndex in 0..<200 {
                    group.addTask {
                        try await offCooperativePool {
                            let connection = try RawConnection(port: port)
                            var ok = 0
                            for requestIndex in 0..<5 {
                                let payload = "c\(connectionIndex)-r\(requestIndex)-" + String(repeating: "x", count: connectionIndex)
                                try connection.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: \(payload.utf8.count)\r\n\r\n\(payload)")
                                if try connection.readResponse().text == payload { ok += 1 }
                            }
                            return ok
                        }
                    }
                }
                var total = 0
                for try await ok in group { total += ok }
                #expect(total == 1000)
            }
        }
    }

    @Test func aClientClosingMidRequestOrBeforeItsAnswerHarmsNothing() async throws {
        try await withServer { server, port in
            try await offCooperativePool {
                let partial = try RawConnection(port: port)
                try partial.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc")
                let waiting = try RawConnection(port: port)
                try waiting.send("GET /id/1?delay_ms=200 HTTP/1.1\r\nHost: t\r\n\r\n")
                _ = partial  // both closed at the end of this scope, before the answer
            }
            let deadline = ContinuousClock.now + .seconds(5)
            try await Task.sleep(for: .milliseconds(300))
            while server.requestsInFlight > 0 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
            #expect(server.requestsInFlight == 0)
            #expect(try await httpRequest(port: port, "GET", "/healthz").status == 200)
        }
    }

    @Test func requestIDsAreKeptOrMade() async throws {
        try await withServer { _, port in
            let given = try await httpRequest(port: port, "GET", "/request-id", headers: [("X-Request-ID", "abc-123")])
            #expect(given.text == "abc-123")
            #expect(given.header("X-Request-ID") == "abc-123")
            let made = try await httpRequest(port: port, "GET", "/request-id", headers: [("X-Request-ID", "not ok!")])
            #expect(made.text != "not ok!")
            #expect(made.header("X-Request-ID") == made.text)
        }
    }

    @Test func shutdownFinishesRequestsInFlightAndRefusesNewOnes() async throws {
        var configuration = ServerConfiguration(host: "127.0.0.1", port: 0, eventLoops: 2)
        configuration.timeout = .seconds(5)
        let server = HTTPServer(configuration: configuration, responder: TestResponder(), logger: Logger(label: "test"))
        try server.start()
        let port = server.port
        let responses = Task {
            try await withThrowingTaskGroup(of: TestResponse.self) { group in
                for index in 0..<20 {
                    group.addTask { try await httpRequest(port: port, "GET", "/id/\(index)?delay_ms=300") }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
        }
        let deadline = ContinuousClock.now + .seconds(10)
        while server.requestsInFlight < 20 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        #expect(server.requestsInFlight == 20)
        let start = ContinuousClock.now
        await server.shutdown(gracePeriod: .seconds(5))
        #expect(ContinuousClock.now - start < .seconds(2))
        let answers = try await responses.value
        #expect(answers.count == 20)
        #expect(answers.allSatisfy { $0.status == 200 })
        #expect(throws: (any Error).self) { _ = try RawConnection(port: port) }
    }
}
