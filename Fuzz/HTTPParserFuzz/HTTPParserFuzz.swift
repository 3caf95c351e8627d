// libFuzzer target: the HTTP/1.1 request parser (heads, Content-Length and chunked bodies),
// fed in the split the input's first byte picks. Checks that it never traps, never hands out a
// body over its limit, and never keeps more input than its limits allow.
import FuzzSupport
@testable import Server

/// Parses `data[1...]` in pieces of `data[0] % 32 + 1` bytes, as reads would deliver it.
func fuzzRequestParser(_ data: UnsafeRawBufferPointer) {
    guard let first = data.first else { return }
    let split = Int(first % 32) + 1
    let maxHeader = 512, maxBody = 1024
    var parser = RequestParser(maxHeaderBytes: maxHeader, maxBodyBytes: maxBody)
    var buffer: [UInt8] = []
    var offset = 1
    while offset < data.count {
        let end = min(data.count, offset + split)
        buffer.append(contentsOf: data[offset..<end])
        offset = end
        parsing: while true {
            switch parser.parse(&buffer) {
            case .incomplete:
                break parsing
            case .failure(let error):
                precondition([400, 408, 413, 431, 501, 505].contains(error.status), "unexpected status \(error.status)")
                return
            case .request(let head, let body):
                precondition(body.count <= maxBody, "a body over the limit")
                precondition(!head.method.rawValue.isEmpty && head.method.rawValue.utf8.count <= RequestParser.maxMethodBytes)
            }
        }
        precondition(buffer.count <= maxHeader + maxBody + 2 * split, "the parser kept \(buffer.count) bytes")
    }
}

// libFuzzer's input callback and the `main` SwiftPM links; without libFuzzer, a corpus replayer.
#if FUZZING
@_cdecl("LLVMFuzzerTestOneInput") public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 { fuzzInput(data, size, fuzzRequestParser) }
@_cdecl("HTTPParserFuzz_main") public func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int32 { runLibFuzzer(fuzzOneInput) }
#else
@main enum Replay { static func main() { replay(CommandLine.arguments.dropFirst(), through: fuzzRequestParser) } }
#endif
