import Server

/// The `Idempotency-Key` of a request (draft-ietf-httpapi-idempotency-key-header): an RFC 8941
/// string (`"…"`, with `\"` and `\\` escapes) or, as many clients send it, the bare characters;
/// 1–255 printable ASCII characters either way.
enum IdempotencyKey {
    static let maxLength = 255

    /// The key, nil when the request has none; a 400 when it is malformed or given twice.
    static func parse(_ headers: HTTPHeaders) throws -> String? {
        let values = headers.values("Idempotency-Key")
        guard let first = values.first else { return nil }
        guard values.count == 1, let key = decode(first.trimmingASCIISpaces()) else {
            throw APIError.badRequest("Idempotency-Key must be one string of 1 to \(maxLength) printable characters")
        }
        return key
    }

    /// The key in `text`: a structured-field string, or a bare run of visible characters.
    static func decode(_ text: String) -> String? {
        let bytes = Array(text.utf8)
        var key: [UInt8] = []
        if bytes.first == UInt8(ascii: "\"") {
            var index = 1
            var closed = false
            while index < bytes.count {
                let byte = bytes[index]
                if byte == UInt8(ascii: "\\") {
                    guard index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "\"") || bytes[index + 1] == UInt8(ascii: "\\") else { return nil }
                    key.append(bytes[index + 1])
                    index += 2
                    continue
                }
                if byte == UInt8(ascii: "\"") {
                    closed = index == bytes.count - 1
                    break
                }
                guard byte >= 0x20, byte <= 0x7E else { return nil }
                key.append(byte)
                index += 1
            }
            guard closed else { return nil }
        } else {
            guard bytes.allSatisfy({ $0 >= 0x21 && $0 <= 0x7E }) else { return nil }
            key = bytes
        }
        guard (1...maxLength).contains(key.count) else { return nil }
        return String(decoding: key, as: UTF8.self)
    }
}
