import Synchronization

/// Makes request ids (`<random prefix>-<counter>`) and vets incoming `X-Request-ID` values.
final class RequestIDGenerator: Sendable {
    /// `<random hex>-`, to which the counter is appended.
    private let prefix: String
    private let counter = Atomic<UInt64>(0)

    init() {
        var generator = SystemRandomNumberGenerator()
        prefix = String(generator.next() as UInt32, radix: 16) + "-"
    }

    /// The incoming id when it is well formed (1–128 of `A-Z a-z 0-9 - _ . :`), else a new one.
    func id(for incoming: String?) -> String {
        if let incoming, Self.isWellFormed(incoming) { return incoming }
        let next = counter.wrappingAdd(1, ordering: .relaxed).newValue
        var id = prefix
        id.append(contentsOf: String(next))
        return id
    }

    static func isWellFormed(_ id: String) -> Bool {
        let utf8 = id.utf8
        guard !utf8.isEmpty, utf8.count <= 128 else { return false }
        return utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"),
                 UInt8(ascii: "."), UInt8(ascii: ":"):
                return true
            default:
                return false
            }
        }
    }
}
