import Testing
@testable import Server

@Suite("Chunked body decoder (pure)")
struct ChunkedBodyDecoderTests {
    /// Decodes `text` fed in pieces of `split` bytes; the outcome, the body and what was left.
    private func decode(_ text: String, split: Int = .max, maxBody: Int = 100, maxTrailer: Int = 64) -> (ChunkedBodyDecoder.Outcome, String, Int) {
        var decoder = ChunkedBodyDecoder(maxBodyBytes: maxBody, maxTrailerBytes: maxTrailer)
        let bytes = Array(text.utf8)
        var offset = 0
        var outcome = ChunkedBodyDecoder.Outcome.needMore
        while offset < bytes.count {
            let end = min(bytes.count, offset + split)
            let (consumed, result) = bytes[offset..<end].withUnsafeBufferPointer { decoder.consume($0) }
            outcome = result
            offset += consumed
            if result != .needMore { break }
            // Every byte handed over is taken: nothing is ever scanned twice.
            #expect(consumed == end - (offset - consumed))
        }
        return (outcome, String(decoding: decoder.body, as: UTF8.self), bytes.count - offset)
    }

    @Test(arguments: [1, 2, 3, 7, 1000])
    func decodesInAnySplit(split: Int) {
        let (outcome, body, left) = decode("5;a=1;b=\"x y\"\r\nhello\r\n1\r\n \r\n05\r\nworld\r\n0\r\nX-T: 1\r\n\r\nNEXT", split: split)
        #expect(outcome == .complete)
        #expect(body == "hello world")
        #expect(left == 4)
    }

    @Test(arguments: [
        "5\nhello\r\n0\r\n\r\n",            // bare LF after a size
        "5\r\nhello\n0\r\n\r\n",            // bare LF after data
        "5\r\nhelloXX0\r\n\r\n",            // data longer than its size
        "5 zz\r\nhello\r\n0\r\n\r\n",       // junk after a size
        " 5\r\nhello\r\n0\r\n\r\n",         // space before a size
        "5 \r\nhello\r\n0\r\n\r\n",         // whitespace not followed by an extension
        "\r\n",                             // no size at all
        "5;a\rb\r\nhello\r\n0\r\n\r\n",     // CR inside an extension
        "5;a\u{0}b\r\nhello\r\n0\r\n\r\n",  // NUL inside an extension
        "0\r\nbad trailer\r\n\r\n",         // trailer without a colon
        "0\r\nX: 1\n\r\n",                  // bare LF in a trailer
        "0\r\n\n",                          // bare LF ending the trailers
        "-1\r\n",
    ])
    func malformedFramingIsRefused(text: String) {
        #expect(decode(text).0 == .failure(ChunkedBodyDecoder.malformed))
        #expect(decode(text, split: 1).0 == .failure(ChunkedBodyDecoder.malformed))
    }

    @Test func bodyOverTheLimitIs413() {
        #expect(decode("65\r\n").0 == .failure(ChunkedBodyDecoder.tooLarge))  // 101 > 100, refused at the size
        #expect(decode("ffffffffffffffffffffffff\r\n").0 == .failure(ChunkedBodyDecoder.tooLarge))
        let fifty = String(repeating: "x", count: 50)
        #expect(decode("32\r\n\(fifty)\r\n32\r\n\(fifty)\r\n0\r\n\r\n", maxBody: 100).0 == .failure(ChunkedBodyDecoder.tooLarge))
    }

    /// Extensions and size lines count against the body limit with the data: an endless
    /// extension is refused once it passes the limit, not read for as long as it lasts.
    @Test func framingCountsAgainstTheBodyLimit() {
        let (outcome, _, _) = decode("1;" + String(repeating: "e", count: 200) + "\r\nx\r\n0\r\n\r\n")
        #expect(outcome == .failure(ChunkedBodyDecoder.tooLarge))
        let manyEmpty = String(repeating: "000;x\r\n", count: 1)
        #expect(decode(manyEmpty + "\r\n").0 == .complete)
        let tiny = String(repeating: "1\r\nx\r\n", count: 30)  // 30 data bytes, 180 on the wire
        #expect(decode(tiny + "0\r\n\r\n").0 == .failure(ChunkedBodyDecoder.tooLarge))
    }

    @Test func trailersCountAgainstTheHeaderLimit() {
        let trailer = "X-Long: " + String(repeating: "v", count: 100) + "\r\n"
        #expect(decode("0\r\n" + trailer + "\r\n", maxTrailer: 64).0 == .failure(ChunkedBodyDecoder.trailersTooLarge))
        #expect(decode("0\r\n" + trailer + "\r\n", maxTrailer: 200).0 == .complete)
    }
}
