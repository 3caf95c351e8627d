import Foundation
import Glibc
import Testing
import TestSupport
@testable import Server

/// What a hostile or broken client can no longer do: hold a connection past its state's
/// deadline by trickling bytes, pin an answer by not reading it, or open connections without
/// bound.
@Suite("HTTP server against hostile clients")
struct HardeningTests {
    /// After an error answer the connection lingers to drain input, for `lingerTimeout` in all:
    /// a byte every 100 ms does not keep it open.
    @Test func lingeringEndsAtItsDeadlineWhateverTheClientSends() async throws {
        try await withServer({ $0.lingerTimeout = .milliseconds(300) }) { _, port in
            try await offCooperativePool {
                let connection = try RawConnection(port: port, timeout: 5)
                try connection.send("BAD\r\n\r\n")
                #expect(try connection.readResponse().status == 400)
                let started = ContinuousClock.now
                var closed = false
                while ContinuousClock.now - started < .seconds(3) {
                    do { try connection.send("x") } catch { closed = true; break }
                    usleep(100_000)
                }
                #expect(closed)
                #expect(ContinuousClock.now - started < .milliseconds(1500))
            }
        }
    }

    /// A request trickled one header byte at a time gets 408 when the request's deadline comes,
    /// not a fresh timeout per byte.
    @Test func aTrickledHeadGets408AtTheRequestDeadline() async throws {
        try await withServer({ $0.timeout = .milliseconds(500) }) { _, port in
            let connection = try RawConnection(port: port, timeout: 5)
            let started = ContinuousClock.now
            async let trickle: Void = offCooperativePool {
                for byte in "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: " + String(repeating: "a", count: 40) {
                    guard (try? connection.send(String(byte))) != nil else { return }
                    usleep(50_000)
                }
            }
            let response = try await offCooperativePool { try connection.readResponse() }
            let elapsed = ContinuousClock.now - started
            #expect(response.status == 408)
            #expect(elapsed < .milliseconds(1200))
            try await trickle
        }
    }

    /// An answer the client reads too slowly (a little every 50 ms: progress, but not enough)
    /// is dropped when the write deadline passes; its buffer goes with it.
    @Test func aClientThatDoesNotReadItsAnswerIsCutAtTheDeadline() async throws {
        // Larger than the kernel's socket buffers on both sides, so most of it waits in the server.
        let size = 24_000_000
        try await withServer({ $0.timeout = .seconds(1); $0.maxBodyBytes = size }) { _, port in
            try await offCooperativePool {
                let request = Array("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: \(size)\r\n\r\n".utf8) + [UInt8](repeating: 122, count: size)
                let connection = try RawConnection(port: port, timeout: 5, receiveBuffer: 4096)
                try connection.send(request)
                let started = ContinuousClock.now
                let (received, closed) = connection.readSlowly(chunk: 4096, every: .milliseconds(50), for: .seconds(4))
                // The server gave up on the write: far fewer bytes than the answer, then the end.
                #expect(closed)
                #expect(received < size)
                #expect(ContinuousClock.now - started < .milliseconds(2500))
            }
        }
    }

    /// At `maxConnections` the server stops accepting; the next client waits in the backlog
    /// and is served as soon as a place frees up.
    @Test func theConnectionLimitPausesAcceptingAndResumes() async throws {
        try await withServer({ $0.maxConnections = 3 }) { _, port in
            try await offCooperativePool {
                var open: [RawConnection] = []
                for _ in 0..<3 {
                    let connection = try RawConnection(port: port, timeout: 5)
                    try connection.send("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
                    #expect(try connection.readResponse().status == 200)
                    open.append(connection)
                }
                let waiting = try RawConnection(port: port, timeout: 1)
                try waiting.send("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
                #expect(throws: (any Error).self) { try waiting.readResponse() }
                open.removeFirst()  // closes it
                let started = ContinuousClock.now
                var answered: TestResponse?
                while answered == nil, ContinuousClock.now - started < .seconds(3) {
                    answered = try? waiting.readResponse()
                }
                #expect(answered?.status == 200)
            }
        }
    }

    /// A thousand connections opened and closed against a limit of 50: every one is served.
    @Test func connectionsBeyondTheLimitAreServedInTurn() async throws {
        try await withServer({ $0.maxConnections = 50 }) { _, port in
            try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<200 {
                    group.addTask {
                        try await offCooperativePool {
                            var served = 0
                            for _ in 0..<5 {
                                let connection = try RawConnection(port: port, timeout: 10)
                                try connection.send("GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                                if try connection.readResponse().status == 200 { served += 1 }
                            }
                            return served
                        }
                    }
                }
                var total = 0
                for try await served in group { total += served }
                #expect(total == 1000)
            }
        }
    }
}
