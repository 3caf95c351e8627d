import Testing
@testable import Server

@Suite("Request ids (pure)")
struct RequestIDTests {
    @Test func requestIDs() {
        let generator = RequestIDGenerator()
        #expect(generator.id(for: "abc-123") == "abc-123")
        #expect(generator.id(for: "bad id") != "bad id")
        #expect(generator.id(for: String(repeating: "a", count: 129)).count < 129)
        #expect(generator.id(for: nil) != generator.id(for: nil))
    }
}
