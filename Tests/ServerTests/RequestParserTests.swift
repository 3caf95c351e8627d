import Testing
@testable import Server

@Suite("Request parser (pure)")
struct RequestParserTests {
    private func parse(_ text: String, maxHeader: Int = 1024, maxBody: Int = 100) -> (RequestParser.Result, [UInt8]) {
        var parser = RequestParser(maxHeaderBytes: maxHeader, maxBodyBytes: maxBody)
        var buffer = Array(text.utf8)
        return (parser.parse(&buffer), buffer)
    }

    @Test func simpleGetLeavesPipelinedBytes() throws {
        let (result, rest) = parse("GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\nHost: t\r\n\r\n")
        guard case .request(let head, let body) = result else { Issue.record("expected a request, got \(result)"); return }
        #expect(head.method == .get)
        #expect(head.target == "/a?b=1")
        #expect(head.keepAlive)
        #expect(body.isEmpty)
        #expect(String(decoding: rest, as: UTF8.self) == "GET /next HTTP/1.1\r\nHost: t\r\n\r\n")
    }

    @Test func bodyByContentLength() {
        let (result, _) = parse("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
        guard case .request(_, let body) = result else { Issue.record("expected a request"); return }
        #expect(body == Array("hello".utf8))
    }

    @Test func incompleteBodyWaits() {
        let (result, rest) = parse("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhel")
        guard case .incomplete(let sendContinue) = result else { Issue.record("expected incomplete"); return }
        #expect(!sendContinue)
        #expect(rest.count > 0)
    }

    @Test func expectContinueAskedOnce() {
        var parser = RequestParser(maxHeaderBytes: 1024, maxBodyBytes: 100)
        var buffer = Array("POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n".utf8)
        guard case .incomplete(true) = parser.parse(&buffer) else { Issue.record("expected a 100 Continue"); return }
        guard case .incomplete(false) = parser.parse(&buffer) else { Issue.record("100 Continue twice"); return }
        buffer += Array("abc".utf8)
        guard case .request(_, let body) = parser.parse(&buffer) else { Issue.record("expected the request"); return }
        #expect(body == Array("abc".utf8))
    }

    @Test(arguments: [
        ("GARBAGE\r\n\r\n", 400),
        ("GET /x HTTP/1.1 extra\r\n\r\n", 400),
        ("GET /x HTTP/2.0\r\n\r\n", 505),
        ("GET x HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("GET /x HTTP/1.1\r\nHost: t\r\nBad Header: 1\r\n\r\n", 400),
        ("GET /x HTTP/1.1\r\nHost: t\r\nNoColon\r\n\r\n", 400),
        ("GET /x HTTP/1.1\r\nHost: t\r\n folded: 1\r\n\r\n", 400),
        ("POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", 400),
        ("POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        ("POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 101\r\n\r\n", 413),
        ("POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999\r\n\r\n", 413),
        ("POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        ("POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        ("POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("GET /x HTTP/1.1\r\n\r\n", 400),
        ("GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ("GET /x HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n", 400),
        ("GET /x HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
        ("ABCDEFGHIJKLMNOPQRSTUVWXYZ /x HTTP/1.1\r\nHost: t\r\n\r\n", 501),
        ("GET  /x HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("GET /x  HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("GET /x http/1.1\r\n\r\n", 400),
        ("GET /x HTTP/1.1\r\nHost: t\r\nX: a\u{7F}b\r\n\r\n", 400),
        ("GET /x HTTP/1.1\r\nHost: t\r\nX: a\rb\r\n\r\n", 400),
        ("GET /x HTTP/1.1\r\nHost: t\r\n: empty name\r\n\r\n", 400),
        ("G(T /x HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("GET ** HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        (" GET /x HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ])
    func refusals(request: String, status: Int) {
        let (result, _) = parse(request)
        guard case .failure(let error) = result else { Issue.record("expected \(status) for \(request.debugDescription), got \(result)"); return }
        #expect(error.status == status)
    }

    @Test func headerTooLargeIs431EvenBeforeTheHeadEnds() {
        let (result, _) = parse("GET / HTTP/1.1\r\nHost: t\r\nX: " + String(repeating: "a", count: 2000), maxHeader: 1024)
        guard case .failure(let error) = result else { Issue.record("expected 431"); return }
        #expect(error.status == 431)
    }

    @Test func http10ClosesUnlessKeepAlive() {
        guard case .request(let plain, _) = parse("GET / HTTP/1.0\r\n\r\n").0,
              case .request(let kept, _) = parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").0,
              case .request(let closed, _) = parse("GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").0
        else { Issue.record("expected requests"); return }
        #expect(!plain.keepAlive)
        #expect(kept.keepAlive)
        #expect(!closed.keepAlive)
    }

    @Test func headerValuesAreTrimmedAndConnectionTokensFound() {
        guard case .request(let head, _) = parse("\r\nOPTIONS * HTTP/1.0\r\nX-Tab:\t a\tb \t\r\nConnection: Upgrade, Keep-Alive\r\n\r\n").0,
              case .request(let closing, _) = parse("GET /c HTTP/1.1\r\nHost: t\r\nconnection: upgrade ,  CLOSE\r\n\r\n").0
        else { Issue.record("expected requests"); return }
        #expect(head.method == .options && head.target == "*" && head.minorVersion == 0)
        #expect(head.headers["x-tab"] == "a\tb")
        #expect(head.keepAlive)
        #expect(!closing.keepAlive)
        #expect(closing.headers.count == 2)
    }

    @Test func bareLineFeedsAreAccepted() {
        guard case .request(let head, _) = parse("GET /lf HTTP/1.1\nHost: x\n\n").0 else { Issue.record("expected a request"); return }
        #expect(head.target == "/lf")
        #expect(head.headers["host"] == "x")
    }

    @Test func chunkedBodies() {
        let (result, rest) = parse("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT")
        guard case .request(_, let body) = result else { Issue.record("expected a request, got \(result)"); return }
        #expect(String(decoding: body, as: UTF8.self) == "hello world")
        #expect(String(decoding: rest, as: UTF8.self) == "NEXT")
    }

    @Test func hostIsOptionalOnHTTP10AndEmptyIsAllowed() {
        guard case .request = parse("GET / HTTP/1.0\r\n\r\n").0 else { Issue.record("HTTP/1.0 without Host refused"); return }
        guard case .request = parse("GET / HTTP/1.1\r\nHost:\r\n\r\n").0 else { Issue.record("empty Host refused"); return }
        guard case .request = parse("GET / HTTP/1.1\r\nHost: [::1]:5555\r\n\r\n").0 else { Issue.record("IPv6 Host refused"); return }
    }

    /// A chunked body fed through the connection's parser in pieces: the bytes already decoded
    /// leave the buffer at once, so it never holds more than one partial line.
    @Test func chunkedBodyTrickledByteByByteKeepsTheBufferSmall() {
        var parser = RequestParser(maxHeaderBytes: 1024, maxBodyBytes: 10_000)
        var buffer = Array("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".utf8)
        guard case .incomplete = parser.parse(&buffer) else { Issue.record("expected incomplete"); return }
        let chunk = Array("a;name=\"v\"\r\n0123456789\r\n".utf8)
        var largest = 0
        for _ in 0..<100 {
            for byte in chunk {
                buffer.append(byte)
                guard case .incomplete = parser.parse(&buffer) else { Issue.record("ended early"); return }
                largest = max(largest, buffer.count)
            }
        }
        buffer += Array("0\r\n\r\n".utf8)
        guard case .request(_, let body) = parser.parse(&buffer) else { Issue.record("expected the request"); return }
        #expect(body.count == 1000)
        #expect(largest <= 1)
    }
    @Test func queryParametersAreDecoded() {
        let query = QueryParameters("sort_by=created_at&sort_order=DESC&q=a%20b+c&empty&bad=%zz")
        #expect(query["sort_by"] == "created_at")
        #expect(query["sort_order"] == "DESC")
        #expect(query["q"] == "a b c")
        #expect(query["empty"] == "")
        #expect(query["bad"] == "%zz")
    }
}
