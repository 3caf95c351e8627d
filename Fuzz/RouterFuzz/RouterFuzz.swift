// libFuzzer target: the router and its middleware over arbitrary methods, paths (percent
// escapes included) and headers. Checks that every request gets an answer with a valid status.
import FuzzSupport
import Logging
@testable import Server

let router: Router = {
    var router = Router(logger: Logger(label: "fuzz"))
    router.use(CORSMiddleware(origins: ["http://localhost:5173"]))
    for (method, template) in [(HTTPMethod.get, "/api/tasks"), (.post, "/api/tasks"), (.get, "/api/tasks/:id"),
                               (.put, "/api/tasks/:id"), (.delete, "/api/tasks/:id"), (.get, "/healthz")] {
        router.addImmediate(method, template) { request in
            HTTPResponse(status: 200, body: Array((request.parameters["id"] ?? "").utf8))
        }
    }
    return router
}()

/// Input: method, path and an Origin, separated by newlines.
func fuzzRouter(_ data: UnsafeRawBufferPointer) {
    let parts = String(decoding: data, as: UTF8.self).split(separator: "\n", maxSplits: 3, omittingEmptySubsequences: false)
    guard parts.count >= 2 else { return }
    var headers = HTTPHeaders([("Origin", parts.count > 2 ? String(parts[2]) : "")])
    if parts.count > 3 { headers["Access-Control-Request-Method"] = String(parts[3]) }
    let request = HTTPRequest(method: HTTPMethod(String(parts[0])), path: String(parts[1]), headers: headers)
    if case .now(let response) = router.answer(request) {
        precondition((200...599).contains(response.status), "an answer with an invalid status")
    }
}

// libFuzzer's input callback and the `main` SwiftPM links; without libFuzzer, a corpus replayer.
#if FUZZING
@_cdecl("LLVMFuzzerTestOneInput") public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 { fuzzInput(data, size, fuzzRouter) }
@_cdecl("RouterFuzz_main") public func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int32 { runLibFuzzer(fuzzOneInput) }
#else
@main enum Replay { static func main() { replay(CommandLine.arguments.dropFirst(), through: fuzzRouter) } }
#endif
