import EventLoopCore
@testable import App

/// A `TaskStore` in memory, for route tests that need no PostgreSQL. Sorting follows the same
/// keys as the SQL (ties by id); text compares by bytes, which is what PostgreSQL's "C"
/// collation does (the database tests cover the server's real ordering).
final class InMemoryTaskStore: TaskStore {
    private struct State {
        var tasks: [Int: TaskItem] = [:]
        var nextID = 1
        var settings: SettingsItem?
        /// A clock that moves one millisecond per write, so timestamps differ.
        var now = Timestamp(microsecondsSinceEpoch: 1_704_110_400_000_000)

        mutating func tick() -> Timestamp {
            now.microsecondsSinceEpoch += 1000
            return now
        }
    }

    private let state = LockedValue(State())

    func list(sortBy: TaskSortField?, descending: Bool) async throws -> [TaskItem] {
        let tasks = state.withLock { Array($0.tasks.values) }
        guard let sortBy else { return tasks.sorted { $0.id < $1.id } }
        func key(_ task: TaskItem) -> [UInt8] {
            switch sortBy {
            case .status: Array(task.status)
            case .title: Array(task.title)
            case .createdAt: withUnsafeBytes(of: task.createdAt.microsecondsSinceEpoch.bigEndian ^ (1 << 63)) { Array($0) }
            case .updatedAt: withUnsafeBytes(of: task.updatedAt.microsecondsSinceEpoch.bigEndian ^ (1 << 63)) { Array($0) }
            }
        }
        return tasks.sorted { a, b in
            let (ka, kb) = (key(a), key(b))
            if ka == kb { return a.id < b.id }
            return descending ? kb.lexicographicallyPrecedes(ka) : ka.lexicographicallyPrecedes(kb)
        }
    }

    func find(id: Int) async throws -> TaskItem? {
        state.withLock { $0.tasks[id] }
    }

    func create(_ task: NewTask) async throws -> TaskItem {
        state.withLock { state in
            let now = state.tick()
            let item = TaskItem(
                id: state.nextID, title: ArraySlice(task.title.utf8), description: task.description.map { ArraySlice($0.utf8) },
                status: ArraySlice(task.status.rawValue.utf8), createdAt: now, updatedAt: now
            )
            state.tasks[item.id] = item
            state.nextID += 1
            return item
        }
    }

    func update(id: Int, _ update: TaskUpdate) async throws -> TaskItem? {
        state.withLock { state in
            guard var item = state.tasks[id] else { return nil }
            if case .set(let title) = update.title { item.title = ArraySlice(title.utf8) }
            if case .set(let description) = update.description { item.description = description.map { ArraySlice($0.utf8) } }
            if case .set(let status) = update.status { item.status = ArraySlice(status.rawValue.utf8) }
            item.updatedAt = state.tick()
            state.tasks[id] = item
            return item
        }
    }

    func delete(id: Int) async throws -> Bool {
        state.withLock { $0.tasks.removeValue(forKey: id) != nil }
    }

    func settings() async throws -> SettingsItem {
        state.withLock { state in
            if let settings = state.settings { return settings }
            let created = SettingsItem(darkMode: false, updatedAt: state.tick())
            state.settings = created
            return created
        }
    }

    func updateSettings(darkMode: Bool) async throws -> SettingsItem {
        state.withLock { state in
            let updated = SettingsItem(darkMode: darkMode, updatedAt: state.tick())
            state.settings = updated
            return updated
        }
    }
}
