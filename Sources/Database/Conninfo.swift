import CLibPQ

/// Why libpq would reject `conninfo` (a URL or `key=value` string), or nil when it parses.
public func validateConninfo(_ conninfo: String) -> String? {
    var message: UnsafeMutablePointer<CChar>?
    guard let options = PQconninfoParse(conninfo, &message) else {
        defer { if let message { PQfreemem(message) } }
        return message.map { String(cString: $0).trimmingTrailingWhitespace() } ?? "unparsable"
    }
    PQconninfoFree(options)
    return nil
}

extension String {
    func trimmingTrailingWhitespace() -> String {
        var text = Substring(self)
        while let last = text.last, last.isWhitespace { text = text.dropLast() }
        return String(text)
    }
}
