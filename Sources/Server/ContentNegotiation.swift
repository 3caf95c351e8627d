/// Reads an `Accept` header (RFC 9110 §12.5.1) enough to answer one question: does the client
/// rank one media type above another? Quality values decide; a more specific range
/// (`type/subtype` over `type/*` over `*/*`) sets a type's quality; parameters other than `q`
/// are ignored; a malformed element is skipped.
public struct AcceptHeader: Sendable {
    private struct Range {
        let type: Substring
        let subtype: Substring
        let quality: Double
    }

    private let ranges: [Range]

    /// The header's value, or nil when the request had none (which accepts anything equally).
    public init(_ value: String?) {
        var ranges: [Range] = []
        for element in (value ?? "").split(separator: ",") {
            let parts = element.split(separator: ";")
            guard let mediaRange = parts.first?.trimmingASCIISpaces() else { continue }
            let names = mediaRange.split(separator: "/", omittingEmptySubsequences: false)
            guard names.count == 2, !names[0].isEmpty, !names[1].isEmpty else { continue }
            guard let quality = Self.quality(parts.dropFirst()) else { continue }
            ranges.append(Range(type: Substring(names[0].lowercased()), subtype: Substring(names[1].lowercased()), quality: quality))
        }
        self.ranges = ranges
    }

    /// The `q` among a range's parameters: 1 without one, nil when it is not a number in 0...1.
    private static func quality(_ parameters: ArraySlice<Substring>) -> Double? {
        for parameter in parameters {
            let pair = parameter.split(separator: "=", maxSplits: 1)
            guard pair.count == 2, pair[0].trimmingASCIISpaces().lowercased() == "q" else { continue }
            guard let value = Double(pair[1].trimmingASCIISpaces()), (0...1).contains(value) else { return nil }
            return value
        }
        return 1
    }

    /// The quality the client gives `mediaType` (`type/subtype`, lower case): that of the most
    /// specific range matching it, 0 when none does, 1 when the header was absent or empty.
    public func quality(of mediaType: String) -> Double {
        if ranges.isEmpty { return 1 }
        let names = mediaType.split(separator: "/", maxSplits: 1)
        guard names.count == 2 else { return 0 }
        var best: (specificity: Int, quality: Double) = (-1, 0)
        for range in ranges {
            let specificity: Int
            if range.type == names[0] && range.subtype == names[1] {
                specificity = 2
            } else if range.type == names[0] && range.subtype == "*" {
                specificity = 1
            } else if range.type == "*" && range.subtype == "*" {
                specificity = 0
            } else {
                continue
            }
            if specificity > best.specificity { best = (specificity, range.quality) }
        }
        return best.quality
    }

    /// True when the client ranks `preferred` strictly above `other` (a tie keeps `other`).
    public func prefers(_ preferred: String, over other: String) -> Bool {
        let wanted = quality(of: preferred)
        return wanted > 0 && wanted > quality(of: other)
    }
}
