import Glibc

/// Runs `target` on the bytes of each file named in `paths`: a fuzz target's corpus replayed
/// without libFuzzer (what a plain `swift build` makes of the fuzz targets).
public func replay(_ paths: ArraySlice<String>, through target: (UnsafeRawBufferPointer) -> Void) {
    for path in paths {
        guard let file = fopen(path, "rb") else { continue }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while case let count = fread(&chunk, 1, chunk.count, file), count > 0 { bytes += chunk[0..<count] }
        fclose(file)
        bytes.withUnsafeBytes { target($0) }
    }
}

#if FUZZING
@_silgen_name("LLVMFuzzerRunDriver")
private func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
) -> Int32

/// Runs `target` on one input libFuzzer hands over; libFuzzer's convention is to return 0.
public func fuzzInput(_ data: UnsafePointer<UInt8>?, _ size: Int, _ target: (UnsafeRawBufferPointer) -> Void) -> Int32 {
    target(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

/// Hands the process to libFuzzer (its flags come from the command line), which calls
/// `target` with each input it tries.
public func runLibFuzzer(_ target: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32 {
    var argc = CommandLine.argc
    var argv = CommandLine.unsafeArgv
    return LLVMFuzzerRunDriver(&argc, &argv, target)
}
#endif
