/// Decodes a chunked request body (RFC 9112 §7.1) as its bytes arrive: the state is kept
/// between reads, so each byte is looked at once however the body is split. Strict where a
/// lenient reading could make this server and a proxy in front of it disagree on where the
/// body ends: every line ends in CRLF, a chunk size is hexadecimal digits only, extensions
/// hold no control characters, trailer lines are well-formed fields.
///
/// Bounded: the body's bytes on the wire (data plus framing: size lines, extensions, line
/// ends) count against `maxBodyBytes` (413), trailer lines against `maxTrailerBytes` (431).
/// Trailer fields are read and dropped.
struct ChunkedBodyDecoder {
    enum Outcome: Equatable {
        case needMore
        case complete
        case failure(RequestParseError)
    }

    private enum Phase: Equatable {
        /// Reading a chunk size's hex digits (`digits` so far).
        case size(digits: Int)
        /// Whitespace after the size: only `;` may follow.
        case sizeWhitespace
        /// Inside chunk extensions, up to the CR.
        case extensions
        /// After the CR of a size line.
        case sizeLineFeed
        /// Copying chunk data; `remaining` bytes to go.
        case data(remaining: Int)
        /// Expecting the CR after a chunk's data.
        case dataCR
        /// Expecting the LF after a chunk's data.
        case dataLF
        /// Reading a trailer line (or the final empty line).
        case trailer
        /// After the CR of a trailer line.
        case trailerLineFeed
        case done
    }

    let maxBodyBytes: Int
    let maxTrailerBytes: Int
    /// The decoded data so far.
    private(set) var body: [UInt8] = []
    private var phase = Phase.size(digits: 0)
    private var chunkSize = 0
    /// Bytes of the body consumed from the wire, framing included.
    private var wireBytes = 0
    private var trailerBytes = 0
    /// The trailer line being read (bounded by `maxTrailerBytes`).
    private var trailerLine: [UInt8] = []

    init(maxBodyBytes: Int, maxTrailerBytes: Int) {
        self.maxBodyBytes = maxBodyBytes
        self.maxTrailerBytes = maxTrailerBytes
    }

    /// Takes what it can of `bytes`; returns how many it consumed and whether the body is
    /// complete, needs more, or is refused. After `.complete` the bytes not consumed belong to
    /// the next request.
    mutating func consume(_ bytes: UnsafeBufferPointer<UInt8>) -> (consumed: Int, outcome: Outcome) {
        var index = 0
        while index < bytes.count {
            if case .data(let remaining) = phase {
                let take = min(remaining, bytes.count - index)
                body.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[index..<index + take]))
                index += take
                wireBytes += take
                phase = remaining == take ? .dataCR : .data(remaining: remaining - take)
                continue
            }
            if case .extensions = phase {
                // Extensions are skipped in one tight scan up to their CR (or a refused byte).
                let start = index
                while index < bytes.count, bytes[index] != UInt8(ascii: "\r"), isFieldValueByte(bytes[index]) { index += 1 }
                wireBytes += index - start
                if wireBytes > maxBodyBytes { return (index, .failure(Self.tooLarge)) }
                if index == bytes.count { break }
            }
            let byte = bytes[index]
            index += 1
            if isInTrailers {
                trailerBytes += 1
                if trailerBytes > maxTrailerBytes { return (index, .failure(Self.trailersTooLarge)) }
            } else {
                wireBytes += 1
                if wireBytes > maxBodyBytes { return (index, .failure(Self.tooLarge)) }
            }
            if let error = step(byte) { return (index, .failure(error)) }
            if phase == .done { return (index, .complete) }
        }
        return (index, .needMore)
    }

    private var isInTrailers: Bool {
        switch phase {
        case .trailer, .trailerLineFeed: true
        default: false
        }
    }

    /// The body, once complete (the decoder is spent).
    mutating func takeBody() -> [UInt8] {
        defer { body = [] }
        return body
    }

    /// Advances over one framing byte; an error when the byte is not allowed there.
    private mutating func step(_ byte: UInt8) -> RequestParseError? {
        switch phase {
        case .size(let digits):
            if let digit = hexValue(byte) {
                // Leading zeros are allowed; a value past the limit is refused before it overflows.
                chunkSize = chunkSize << 4 | Int(digit)
                if chunkSize > maxBodyBytes { return Self.tooLarge }
                phase = .size(digits: digits + 1)
                return nil
            }
            guard digits > 0 else { return Self.malformed }
            switch byte {
            case UInt8(ascii: " "), UInt8(ascii: "\t"): phase = .sizeWhitespace
            case UInt8(ascii: ";"): phase = .extensions
            case UInt8(ascii: "\r"): phase = .sizeLineFeed
            default: return Self.malformed
            }
        case .sizeWhitespace:
            switch byte {
            case UInt8(ascii: " "), UInt8(ascii: "\t"): break
            case UInt8(ascii: ";"): phase = .extensions
            default: return Self.malformed
            }
        case .extensions:
            if byte == UInt8(ascii: "\r") {
                phase = .sizeLineFeed
            } else if !isFieldValueByte(byte) {
                return Self.malformed
            }
        case .sizeLineFeed:
            guard byte == UInt8(ascii: "\n") else { return Self.malformed }
            if chunkSize == 0 {
                phase = .trailer
            } else {
                guard body.count + chunkSize <= maxBodyBytes else { return Self.tooLarge }
                phase = .data(remaining: chunkSize)
                chunkSize = 0
            }
        case .dataCR:
            guard byte == UInt8(ascii: "\r") else { return Self.malformed }
            phase = .dataLF
        case .dataLF:
            guard byte == UInt8(ascii: "\n") else { return Self.malformed }
            phase = .size(digits: 0)
        case .trailer:
            if byte == UInt8(ascii: "\r") {
                phase = .trailerLineFeed
            } else if isFieldValueByte(byte) || byte == UInt8(ascii: ":") {
                trailerLine.append(byte)
            } else {
                return Self.malformed
            }
        case .trailerLineFeed:
            guard byte == UInt8(ascii: "\n") else { return Self.malformed }
            if trailerLine.isEmpty {
                phase = .done
                return nil
            }
            guard isWellFormedField(trailerLine) else { return Self.malformed }
            trailerLine.removeAll(keepingCapacity: true)
            phase = .trailer
        case .data, .done:
            break
        }
        return nil
    }

    /// `name: value` with a token name and no whitespace before the colon.
    private func isWellFormedField(_ line: [UInt8]) -> Bool {
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon > 0 else { return false }
        return line[..<colon].allSatisfy(isTokenByte)
    }

    static let malformed = RequestParseError(status: 400, message: "Malformed chunked body")
    static let tooLarge = RequestParseError(status: 413, message: "Request body too large")
    static let trailersTooLarge = RequestParseError(status: 431, message: "Request header fields too large")
}

/// A byte allowed in a field value or chunk extension (RFC 9110 §5.5): visible ASCII, space,
/// tab, and obs-text; never CR, LF, NUL or another control character.
func isFieldValueByte(_ byte: UInt8) -> Bool {
    byte == 0x09 || (byte >= 0x20 && byte != 0x7F)
}
