import Testing
@testable import Server

@Suite("JSON writer (pure)")
struct JSONWriterTests {
    @Test func jsonWriterEscapesLikePython() {
        var json = JSONWriter()
        json.beginObject()
        json.key("a")
        json.string("é\"\\\n\u{01}😀/")
        json.key("b")
        json.beginArray()
        json.int(-12)
        json.bool(true)
        json.null()
        json.endArray()
        json.endObject()
        #expect(String(decoding: json.bytes, as: UTF8.self) == #"{"a":"\u00e9\"\\\n\u0001\ud83d\ude00/","b":[-12,true,null]}"#)
    }

    @Test func byteStringsNeedEscapingExactlyWhenAByteDoes() {
        // Every byte value at every position of strings up to 17 bytes long (the 8-byte word
        // check and the byte tail), written from bytes and from a String, against the rule.
        for length in 1...17 {
            for position in 0..<length {
                for byte in UInt8.min...UInt8.max where byte < 0x80 {
                    var bytes = [UInt8](repeating: UInt8(ascii: "a"), count: length)
                    bytes[position] = byte
                    var fromBytes = JSONWriter()
                    fromBytes.string(utf8: bytes[...])
                    var fromString = JSONWriter()
                    fromString.string(String(decoding: bytes, as: UTF8.self))
                    let plain = byte >= 0x20 && byte < 0x7F && byte != 0x22 && byte != 0x5C
                    let copied = fromBytes.bytes == [0x22] + bytes + [0x22]
                    if plain != copied || fromBytes.bytes != fromString.bytes {
                        Issue.record("byte \(byte) at \(position) of \(length): \(String(decoding: fromBytes.bytes, as: UTF8.self))")
                        return
                    }
                }
            }
        }
        var unicode = JSONWriter()
        unicode.string(utf8: Array("aé😀bcdefghij".utf8)[...])
        #expect(String(decoding: unicode.bytes, as: UTF8.self) == #""a\u00e9\ud83d\ude00bcdefghij""#)
    }
}
