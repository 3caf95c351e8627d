import Testing
@testable import Server

/// `If-Match`/`If-None-Match` parsing and the two comparisons (RFC 9110 §8.8.3, §13.1.1–2).
@Suite("Entity tags (pure)")
struct EntityTagTests {
    func condition(_ lines: String...) -> EntityTagCondition? {
        EntityTagCondition(HTTPHeaders(lines.map { ("If-Match", $0) }), "If-Match")
    }

    @Test func parsesTagsListsAndStar() {
        #expect(EntityTagCondition(HTTPHeaders(), "If-Match") == nil)
        #expect(condition("*") == .any)
        #expect(condition(#""a""#) == .tags([EntityTag("a")]))
        #expect(condition(#"W/"a", "b",,  "c,d" "#) == .tags([EntityTag("a", weak: true), EntityTag("b"), EntityTag("c,d")]))
        #expect(condition(#""a""#, #"W/"b""#) == .tags([EntityTag("a"), EntityTag("b", weak: true)]))
        #expect(condition(#""a", *"#) == .any)
        #expect(condition(#""""#) == .tags([EntityTag("")]))
        // Not entity tags: skipped, so nothing is left to match.
        for garbage in ["a", #"w/"a""#, #""a"b"#, #""a"#, #""a b""#, "", "W/", #"W/ "a""#] {
            #expect(condition(garbage) == .tags([]), "\(garbage)")
        }
        #expect(condition(#"junk, "ok""#) == .tags([EntityTag("ok")]))
    }

    @Test func strongAndWeakComparison() {
        let strong = EntityTag("1"), weak = EntityTag("1", weak: true), other = EntityTag("2")
        #expect(strong.matchesStrongly(strong) && !strong.matchesStrongly(weak) && !weak.matchesStrongly(weak))
        #expect(strong.matchesWeakly(weak) && weak.matchesWeakly(weak) && !strong.matchesWeakly(other))
        let list = EntityTagCondition.tags([weak, other])
        #expect(list.matches(strong, weakly: true))
        #expect(!list.matches(strong, weakly: false))
        #expect(list.matches(EntityTag("2"), weakly: false))
        #expect(EntityTagCondition.any.matches(weak, weakly: false))
        #expect(!EntityTagCondition.any.matches(nil, weakly: true))
        #expect(strong.headerValue == #""1""# && weak.headerValue == #"W/"1""#)
    }

    @Test func notModifiedHasNoBodyAndNoContentLength() {
        let response = HTTPResponse.notModified(EntityTag("x"), cacheControl: "no-cache")
        let bytes = ResponseSerializer.bytes(of: response, keepAlive: true, http10: false, omitBody: false, requestID: nil, dateLine: [])
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(text.hasPrefix("HTTP/1.1 304 Not Modified\r\n"))
        #expect(text.contains("ETag: \"x\"\r\n") && text.contains("Cache-Control: no-cache\r\n"))
        #expect(!text.contains("Content-Length") && !text.contains("Content-Type") && text.hasSuffix("\r\n\r\n"))
    }
}
