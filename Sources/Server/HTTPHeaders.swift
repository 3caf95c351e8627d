/// An ordered list of header fields with case-insensitive lookup by name.
public struct HTTPHeaders: Sendable, Sequence {
    public typealias Element = (name: String, value: String)
    private var fields: [Element]

    public init(_ fields: [Element] = []) { self.fields = fields }

    /// The first value of `name`, compared case-insensitively.
    public subscript(name: String) -> String? {
        get { fields.first(where: { asciiCaseInsensitiveEquals($0.name, name) })?.value }
        set {
            fields.removeAll(where: { asciiCaseInsensitiveEquals($0.name, name) })
            if let newValue { fields.append((name, newValue)) }
        }
    }

    /// Every value of `name`, in order.
    public func values(_ name: String) -> [String] {
        fields.filter { asciiCaseInsensitiveEquals($0.name, name) }.map(\.value)
    }

    public func contains(_ name: String) -> Bool { self[name] != nil }

    public var count: Int { fields.count }

    public func makeIterator() -> IndexingIterator<[Element]> { fields.makeIterator() }
}

/// ASCII case-insensitive equality, as header names and tokens compare.
func asciiCaseInsensitiveEquals(_ a: String, _ b: String) -> Bool {
    let a = a.utf8, b = b.utf8
    guard a.count == b.count else { return false }
    for (x, y) in zip(a, b) where x != y {
        guard (x | 0x20) == (y | 0x20), (x | 0x20) >= 0x61, (x | 0x20) <= 0x7A else { return false }
    }
    return true
}

extension StringProtocol {
    /// The text without leading and trailing spaces and tabs.
    public func trimmingASCIISpaces() -> String {
        let bytes = Array(self.utf8)
        guard let first = bytes.firstIndex(where: { $0 != 0x20 && $0 != 0x09 }),
              let last = bytes.lastIndex(where: { $0 != 0x20 && $0 != 0x09 })
        else { return "" }
        return String(decoding: bytes[first...last], as: UTF8.self)
    }
}
