import Testing
@testable import Server

@Suite("Server configuration (pure)")
struct ServerConfigurationTests {
    @Test func cgroupQuotaParsing() {
        #expect(parseCPUMax("max 100000\n") == nil)
        #expect(parseCPUMax("150000 100000\n") == 2)
        #expect(parseCPUMax("50000 100000") == 1)
        #expect(parseCPUMax("400000 100000") == 4)
        #expect(availableCPUs(cgroupFile: "/nonexistent") >= 1)
    }
}
