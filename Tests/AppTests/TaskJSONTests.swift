import EventLoopCore
import Testing
import Server
@testable import App

/// A task's JSON: the one-append path for plain text writes what the escaping path writes.
@Suite("Task JSON (pure)")
struct TaskJSONTests {
    static func json(_ tasks: [TaskItem], escaping: Bool) -> [UInt8] {
        var json = JSONWriter()
        json.beginArray()
        for task in tasks {
            if escaping { task.writeEscaping(to: &json) } else { task.write(to: &json) }
        }
        json.endArray()
        return json.bytes
    }

    @Test func theFastPathWritesWhatTheEscapingPathWrites() {
        let texts: [String] = ["", "Buy milk", "a \"quoted\" one", "back\\slash", "tab\there", "☃ snow", "emoji 😀", "\u{7F}", String(repeating: "x", count: 5000)]
        let stamps: [Int64] = [0, 1_704_110_400_000_000, 1_704_110_400_123_456, 1_704_110_400_000_001, -1, -86_400_000_001, 253_402_300_799_999_999]
        var tasks: [TaskItem] = []
        for (index, title) in texts.enumerated() {
            for description in [nil] + texts.map(Optional.some) {
                tasks.append(TaskItem(
                    id: [0, 7, 1_000_000, Int.max, -3][index % 5], title: Array(title.utf8)[...], description: description.map { Array($0.utf8)[...] },
                    status: Array(["TODO", "IN_PROGRESS", "DONE"][index % 3].utf8)[...],
                    createdAt: Timestamp(microsecondsSinceEpoch: stamps[index % stamps.count]),
                    updatedAt: Timestamp(microsecondsSinceEpoch: stamps[(index + 3) % stamps.count])
                ))
            }
        }
        for task in tasks { #expect(Self.json([task], escaping: false) == Self.json([task], escaping: true), "\(task)") }
        #expect(Self.json(tasks, escaping: false) == Self.json(tasks, escaping: true), "a list: the commas too")
        let plain = String(decoding: Self.json([tasks[1]], escaping: false), as: UTF8.self)
        #expect(plain == #"[{"created_at":"1970-01-01T00:00:00+00:00","description":"","id":0,"status":"TODO","title":"","updated_at":"2024-01-01T12:00:00.000001+00:00"}]"#)
    }

    @Test func aSharedListIsRenderedOnceForItsCountAndAfreshForAnother() {
        let tasks = (1...3).map { TaskItem(id: $0, title: Array("t\($0)".utf8)[...], description: nil, status: Array("TODO".utf8)[...],
                                           createdAt: Timestamp(microsecondsSinceEpoch: 0), updatedAt: Timestamp(microsecondsSinceEpoch: 0)) }
        let list = TaskList(tasks: tasks, revision: 1)
        let renders = LockedValue(0)
        func render(_ slice: ArraySlice<TaskItem>) -> [UInt8] {
            renders.withLock { $0 += 1 }
            return Self.json(Array(slice), escaping: false)
        }
        let whole = list.body(ofFirst: 3, render)
        #expect(list.body(ofFirst: 3, render) == whole)
        let copy = list  // a copy shares what was rendered
        #expect(copy.body(ofFirst: 3, render) == whole)
        #expect(renders.withLock { $0 } == 1)
        #expect(list.body(ofFirst: 2, render) == Self.json(Array(tasks.prefix(2)), escaping: false), "another count is rendered for itself")
        #expect(renders.withLock { $0 } == 2)
    }
}
