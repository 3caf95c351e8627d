// libFuzzer target: the strict JSON parser and the request validation behind it. Checks that
// no input traps, and that every accepted task has a valid title and status.
import FuzzSupport
@testable import App
@testable import Server

func fuzzJSON(_ data: UnsafeRawBufferPointer) {
    let body = Array(data)
    let request = HTTPRequest(method: .post, path: "/api/tasks", headers: HTTPHeaders([("Content-Type", "application/json")]), body: body)
    guard let object = try? RequestValidation.jsonObject(request) else { return }
    if let task = try? RequestValidation.newTask(object) {
        precondition(!task.title.isEmpty && task.title.unicodeScalars.count <= 200, "an invalid title was accepted")
        precondition(!task.title.utf8.contains(0), "a NUL was accepted")
    }
    _ = try? RequestValidation.taskUpdate(object)
    _ = try? RequestValidation.darkMode(object)
}

// libFuzzer's input callback and the `main` SwiftPM links; without libFuzzer, a corpus replayer.
#if FUZZING
@_cdecl("LLVMFuzzerTestOneInput") public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 { fuzzInput(data, size, fuzzJSON) }
@_cdecl("JSONFuzz_main") public func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int32 { runLibFuzzer(fuzzOneInput) }
#else
@main enum Replay { static func main() { replay(CommandLine.arguments.dropFirst(), through: fuzzJSON) } }
#endif
