/// Writes compact JSON straight into a byte buffer, the way Python's `json.dumps` does with
/// `ensure_ascii` (what Flask's `jsonify` sends): non-ASCII as `\uXXXX`, surrogate pairs above
/// the BMP, lowercase hex.
public struct JSONWriter: Sendable {
    public private(set) var bytes: [UInt8]
    /// True when the next key or value needs a comma before it.
    private var needsComma = false

    public init(capacity: Int = 256) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    /// Hands over what is written so far and goes on with an empty buffer, in the same place
    /// of the document (a long array written in parts is byte for byte the array written whole).
    public mutating func takeBytes(reservingCapacity capacity: Int = 256) -> [UInt8] {
        var taken: [UInt8] = []
        taken.reserveCapacity(capacity)
        swap(&taken, &bytes)
        return taken
    }

    public mutating func beginObject() { separate(); bytes.append(UInt8(ascii: "{")); needsComma = false }
    public mutating func endObject() { bytes.append(UInt8(ascii: "}")); needsComma = true }
    public mutating func beginArray() { separate(); bytes.append(UInt8(ascii: "[")); needsComma = false }
    public mutating func endArray() { bytes.append(UInt8(ascii: "]")); needsComma = true }

    /// Writes an object key and its colon; the value follows. Keys are literals, written as they
    /// are: with a `String` overload beside this one, literals picked it and went through the
    /// escaping check.
    public mutating func key(_ name: StaticString) {
        separate()
        bytes.append(UInt8(ascii: "\""))
        name.withUTF8Buffer { bytes.append(contentsOf: $0) }
        bytes.append(UInt8(ascii: "\""))
        bytes.append(UInt8(ascii: ":"))
        needsComma = false
    }

    /// Writes a key that is not a literal (from a document being converted, say), escaped as
    /// a string is.
    public mutating func key(escaping name: String) {
        string(name)
        bytes.append(UInt8(ascii: ":"))
        needsComma = false
    }

    public mutating func string(_ value: String) {
        var value = value
        value.withUTF8 { string(utf8Bytes: $0) }
    }

    /// Writes UTF-8 text (a database cell, say) as a string, without making a `String` of it
    /// unless it needs escaping. Invalid UTF-8 becomes U+FFFD.
    public mutating func string(utf8 value: ArraySlice<UInt8>) {
        value.withUnsafeBufferPointer { string(utf8Bytes: $0) }
    }

    private mutating func string(utf8Bytes raw: UnsafeBufferPointer<UInt8>) {
        separate()
        bytes.append(UInt8(ascii: "\""))
        if Self.needsEscaping(raw) {
            for scalar in String(decoding: raw, as: UTF8.self).unicodeScalars { escape(scalar.value) }
        } else {
            bytes.append(contentsOf: raw)
        }
        bytes.append(UInt8(ascii: "\""))
        needsComma = true
    }

    public mutating func int(_ value: Int) {
        separate()
        if value >= 0 && value < 10 {
            bytes.append(UInt8(ascii: "0") + UInt8(value))
        } else {
            bytes.append(contentsOf: String(value).utf8)
        }
        needsComma = true
    }

    public mutating func bool(_ value: Bool) {
        separate()
        let literal: StaticString = value ? "true" : "false"
        literal.withUTF8Buffer { bytes.append(contentsOf: $0) }
        needsComma = true
    }

    public mutating func null() {
        separate()
        bytes.append(contentsOf: [0x6E, 0x75, 0x6C, 0x6C])
        needsComma = true
    }

    /// Writes already-encoded text (a timestamp, say) between quotes.
    public mutating func quotedASCII(_ write: (inout [UInt8]) throws -> Void) rethrows {
        separate()
        bytes.append(UInt8(ascii: "\""))
        try write(&bytes)
        bytes.append(UInt8(ascii: "\""))
        needsComma = true
    }

    public mutating func newline() { bytes.append(UInt8(ascii: "\n")) }

    /// True when `text` goes into a JSON string as it is: printable ASCII without `"` or `\\`.
    public static func isPlain(_ text: ArraySlice<UInt8>) -> Bool {
        text.withUnsafeBufferPointer { !needsEscaping($0) }
    }

    /// Writes one value (an object whose layout the caller knows) through `body`, which may
    /// write at most `maximumCount` bytes: one append instead of a check per byte. What it
    /// writes must be JSON already (strings `isPlain`, or escaped).
    public mutating func raw(maximumCount: Int, _ body: (inout RawOutput) -> Void) {
        separate()
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: maximumCount) { buffer in
            var output = RawOutput(buffer)
            body(&output)
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[..<output.count]))
        }
        needsComma = true
    }

    /// Bytes written into memory set aside for them (`raw(maximumCount:_:)`); writing past it
    /// stops the process rather than corrupt memory.
    public struct RawOutput {
        private let buffer: UnsafeMutableBufferPointer<UInt8>
        public private(set) var count = 0

        public init(_ buffer: UnsafeMutableBufferPointer<UInt8>) {
            self.buffer = buffer
        }

        @inline(__always) public mutating func byte(_ byte: UInt8) {
            precondition(count < buffer.count, "JSONWriter.raw: more than maximumCount bytes")
            buffer[count] = byte
            count += 1
        }

        /// Lets `body` write up to `maximumCount` bytes at once (checked once, not per byte);
        /// it returns how many it wrote.
        public mutating func unchecked(maximumCount: Int, _ body: (UnsafeMutablePointer<UInt8>) -> Int) {
            precondition(count + maximumCount <= buffer.count, "JSONWriter.raw: more than maximumCount bytes")
            let written = body(buffer.baseAddress! + count)
            precondition(written <= maximumCount)
            count += written
        }

        public mutating func literal(_ text: StaticString) {
            text.withUTF8Buffer { append($0) }
        }

        public mutating func bytes(_ text: ArraySlice<UInt8>) {
            text.withUnsafeBufferPointer { append($0) }
        }

        public mutating func int(_ value: Int) {
            var magnitude = value.magnitude
            if value < 0 { byte(UInt8(ascii: "-")) }
            var digits = 1
            var rest = magnitude / 10
            while rest > 0 { digits += 1; rest /= 10 }
            precondition(count + digits <= buffer.count, "JSONWriter.raw: more than maximumCount bytes")
            var index = count + digits
            repeat {
                index -= 1
                buffer[index] = UInt8(truncatingIfNeeded: 0x30 + magnitude % 10)
                magnitude /= 10
            } while magnitude > 0
            count += digits
        }

        private mutating func append(_ source: UnsafeBufferPointer<UInt8>) {
            guard let base = source.baseAddress, !source.isEmpty else { return }
            precondition(count + source.count <= buffer.count, "JSONWriter.raw: more than maximumCount bytes")
            (buffer.baseAddress! + count).update(from: base, count: source.count)
            count += source.count
        }
    }

    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

    /// True when any byte is not printable ASCII or is `"` or `\\`: eight bytes at a time.
    private static func needsEscaping(_ raw: UnsafeBufferPointer<UInt8>) -> Bool {
        guard let base = raw.baseAddress else { return false }
        let ones: UInt64 = 0x0101_0101_0101_0101
        let highs: UInt64 = 0x8080_8080_8080_8080
        @inline(__always) func hasZeroByte(_ word: UInt64) -> Bool { (word &- ones) & ~word & highs != 0 }
        var index = 0
        while index + 8 <= raw.count {
            let word = UnsafeRawPointer(base + index).loadUnaligned(as: UInt64.self)
            // With no byte >= 0x80, subtracting 0x20 from each byte sets a high bit only below 0x20.
            if word & highs != 0 || (word &- ones &* 0x20) & highs != 0
                || hasZeroByte(word ^ (ones &* 0x7F)) || hasZeroByte(word ^ (ones &* 0x22)) || hasZeroByte(word ^ (ones &* 0x5C)) {
                return true
            }
            index += 8
        }
        while index < raw.count {
            let byte = base[index]
            if byte < 0x20 || byte >= 0x7F || byte == 0x22 || byte == 0x5C { return true }
            index += 1
        }
        return false
    }

    private mutating func separate() {
        if needsComma { bytes.append(UInt8(ascii: ",")) }
    }

    private mutating func escape(_ value: UInt32) {
        switch value {
        case 0x22: bytes.append(contentsOf: [0x5C, 0x22])
        case 0x5C: bytes.append(contentsOf: [0x5C, 0x5C])
        case 0x0A: bytes.append(contentsOf: [0x5C, UInt8(ascii: "n")])
        case 0x0D: bytes.append(contentsOf: [0x5C, UInt8(ascii: "r")])
        case 0x09: bytes.append(contentsOf: [0x5C, UInt8(ascii: "t")])
        case 0x08: bytes.append(contentsOf: [0x5C, UInt8(ascii: "b")])
        case 0x0C: bytes.append(contentsOf: [0x5C, UInt8(ascii: "f")])
        case 0x20..<0x7F: bytes.append(UInt8(truncatingIfNeeded: value))
        case 0x10000...:
            let offset = value - 0x10000
            unicodeEscape(0xD800 | (offset >> 10))
            unicodeEscape(0xDC00 | (offset & 0x3FF))
        default: unicodeEscape(value)
        }
    }

    private mutating func unicodeEscape(_ value: UInt32) {
        let hex = Self.hexDigits
        bytes.append(contentsOf: [0x5C, UInt8(ascii: "u")])
        bytes.append(hex[Int((value >> 12) & 0xF)])
        bytes.append(hex[Int((value >> 8) & 0xF)])
        bytes.append(hex[Int((value >> 4) & 0xF)])
        bytes.append(hex[Int(value & 0xF)])
    }
}
