/// An entity tag (RFC 9110 §8.8.3): an opaque validator, strong or weak (`W/"…"`).
public struct EntityTag: Sendable, Hashable {
    /// The characters between the quotes.
    public let opaque: String
    public let isWeak: Bool

    /// `opaque` must be made of `etagc` characters (no `"`, no controls, no space).
    public init(_ opaque: String, weak: Bool = false) {
        precondition(opaque.utf8.allSatisfy(EntityTag.isETagCharacter), "not an entity tag: \(opaque)")
        self.opaque = opaque
        self.isWeak = weak
    }

    /// A tag of `opaque`, or nil when it holds a character a tag cannot.
    public init?(checking opaque: String, weak: Bool = false) {
        guard opaque.utf8.allSatisfy(EntityTag.isETagCharacter) else { return nil }
        self.init(opaque, weak: weak)
    }

    /// As it is written in `ETag`, `If-Match` and `If-None-Match`.
    public var headerValue: String { isWeak ? "W/\"\(opaque)\"" : "\"\(opaque)\"" }

    /// Strong comparison: both strong and the same characters (§8.8.3.2).
    public func matchesStrongly(_ other: EntityTag) -> Bool { !isWeak && !other.isWeak && opaque == other.opaque }

    /// Weak comparison: the same characters, weak or not.
    public func matchesWeakly(_ other: EntityTag) -> Bool { opaque == other.opaque }

    /// `etagc = %x21 / %x23-7E / obs-text`.
    static func isETagCharacter(_ byte: UInt8) -> Bool { byte == 0x21 || (byte >= 0x23 && byte != 0x7F) }
}

/// What an `If-Match` or `If-None-Match` field asks for: any current representation (`*`), or
/// one of a list of tags. Every line of the field counts; elements that are not entity tags are
/// skipped, so a field without one valid tag matches nothing (a write it guards fails closed).
public enum EntityTagCondition: Sendable, Equatable {
    case any
    case tags([EntityTag])

    /// The condition in `headers[name]`, or nil when the request has no such field.
    public init?(_ headers: HTTPHeaders, _ name: String) {
        let lines = headers.values(name)
        guard !lines.isEmpty else { return nil }
        var tags: [EntityTag] = []
        for line in lines {
            var scanner = Array(line.utf8)[...]
            while let element = Self.nextElement(&scanner) {
                if element.count == 1, element.first == UInt8(ascii: "*") {
                    self = .any
                    return
                }
                if let tag = Self.entityTag(element) { tags.append(tag) }
            }
        }
        self = .tags(tags)
    }

    /// Whether `current` (the representation's tag; nil when there is none) satisfies the
    /// condition, comparing weakly (`If-None-Match`) or strongly (`If-Match`).
    public func matches(_ current: EntityTag?, weakly: Bool) -> Bool {
        guard let current else { return false }
        switch self {
        case .any: return true
        case .tags(let tags): return tags.contains { weakly ? $0.matchesWeakly(current) : $0.matchesStrongly(current) }
        }
    }

    /// The next comma-separated element, trimmed; a comma inside quotes does not split.
    private static func nextElement(_ scanner: inout ArraySlice<UInt8>) -> ArraySlice<UInt8>? {
        while let first = scanner.first, first == 0x20 || first == 0x09 || first == UInt8(ascii: ",") { scanner.removeFirst() }
        guard !scanner.isEmpty else { return nil }
        var inQuotes = false
        var end = scanner.startIndex
        while end < scanner.endIndex {
            let byte = scanner[end]
            if byte == UInt8(ascii: "\"") { inQuotes.toggle() }
            if byte == UInt8(ascii: ","), !inQuotes { break }
            end += 1
        }
        var element = scanner[scanner.startIndex..<end]
        scanner = scanner[end...]
        while let last = element.last, last == 0x20 || last == 0x09 { element.removeLast() }
        return element
    }

    /// `[W/] DQUOTE *etagc DQUOTE`, or nil.
    private static func entityTag(_ element: ArraySlice<UInt8>) -> EntityTag? {
        var bytes = element
        var weak = false
        if bytes.starts(with: "W/".utf8) {
            weak = true
            bytes = bytes.dropFirst(2)
        }
        guard bytes.count >= 2, bytes.first == UInt8(ascii: "\""), bytes.last == UInt8(ascii: "\"") else { return nil }
        let opaque = bytes.dropFirst().dropLast()
        guard opaque.allSatisfy(EntityTag.isETagCharacter) else { return nil }
        return EntityTag(String(decoding: opaque, as: UTF8.self), weak: weak)
    }
}

extension HTTPResponse {
    /// `304 Not Modified`: the validator and the caching policy the full answer would carry, no body.
    public static func notModified(_ tag: EntityTag, cacheControl: String) -> HTTPResponse {
        HTTPResponse(status: 304, headers: HTTPHeaders([("ETag", tag.headerValue), ("Cache-Control", cacheControl)]))
    }
}
