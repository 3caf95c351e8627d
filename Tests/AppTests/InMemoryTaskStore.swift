import EventLoopCore
import Server
@testable import App

/// A `TaskStore` in memory, for route tests that need no PostgreSQL. Sorting follows the same
/// keys as the SQL (ties by id); text compares by bytes, which is what PostgreSQL's "C"
/// collation does (the database tests cover the server's real ordering). Tags are a digest of
/// the JSON; the revision counts writes; preconditions are checked under the same lock as the write.
final class InMemoryTaskStore: TaskStore {
    private struct State {
        var tasks: [Int: TaskItem] = [:]
        var nextID = 1
        var settings: SettingsItem?
        var revision: Int64 = 1
        var keys: [String: (request: NewTask, answer: RecordedAnswer)] = [:]
        /// A clock that moves one millisecond per write, so timestamps differ.
        var now = Timestamp(microsecondsSinceEpoch: 1_704_110_400_000_000)

        mutating func tick() -> Timestamp {
            now.microsecondsSinceEpoch += 1000
            revision += 1
            return now
        }
    }

    private let state = LockedValue(State())

    /// FNV-1a over the representation's bytes.
    static func tag(_ bytes: [UInt8]) -> EntityTag {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return EntityTag(String(hash, radix: 16))
    }

    private static func tagged(_ task: TaskItem) -> Tagged<TaskItem> { Tagged(value: task, etag: tag(TaskRoutes.body(task))) }

    private static func tagged(_ settings: SettingsItem) -> Tagged<SettingsItem> {
        var json = JSONWriter()
        settings.write(to: &json)
        return Tagged(value: settings, etag: tag(json.bytes))
    }

    func list(_ query: ListQuery, limit: Int) async throws -> TaskList {
        let whole = selected(query)
        return TaskList(tasks: Array(whole.tasks.prefix(limit)), revision: whole.revision)
    }

    /// The list `query` describes, whole.
    private func selected(_ query: ListQuery) -> TaskList {
        let list = sortedList(sortBy: query.sortBy, descending: query.descending)
        var tasks = list.tasks
        if let status = query.status { tasks.removeAll { $0.status != Array(status.rawValue.utf8)[...] } }
        tasks.removeFirst(min(query.offset, tasks.count))
        return TaskList(tasks: tasks, revision: list.revision)
    }

    func openList(_ query: ListQuery, batchRows: Int) async throws -> any TaskListCursor {
        let tasks = selected(query).tasks
        return ArrayCursor(batches: stride(from: 0, to: tasks.count, by: batchRows).map { Array(tasks[$0..<min(tasks.count, $0 + batchRows)]) })
    }

    /// A list already read, handed out a batch at a time.
    final class ArrayCursor: TaskListCursor {
        private let batches: LockedValue<[[TaskItem]]>
        init(batches: [[TaskItem]]) { self.batches = LockedValue(batches) }
        func next() async throws -> [TaskItem]? { batches.withLock { $0.isEmpty ? nil : $0.removeFirst() } }
    }

    private func sortedList(sortBy: TaskSortField?, descending: Bool) -> TaskList {
        let (tasks, revision) = state.withLock { (Array($0.tasks.values), $0.revision) }
        guard let sortBy else { return TaskList(tasks: tasks.sorted { $0.id < $1.id }, revision: revision) }
        func key(_ task: TaskItem) -> [UInt8] {
            switch sortBy {
            case .status: Array(task.status)
            case .title: Array(task.title)
            case .createdAt: withUnsafeBytes(of: task.createdAt.microsecondsSinceEpoch.bigEndian ^ (1 << 63)) { Array($0) }
            case .updatedAt: withUnsafeBytes(of: task.updatedAt.microsecondsSinceEpoch.bigEndian ^ (1 << 63)) { Array($0) }
            }
        }
        let sorted = tasks.sorted { a, b in
            let (ka, kb) = (key(a), key(b))
            if ka == kb { return a.id < b.id }
            return descending ? kb.lexicographicallyPrecedes(ka) : ka.lexicographicallyPrecedes(kb)
        }
        return TaskList(tasks: sorted, revision: revision)
    }

    func listRevision() async throws -> Int64? { state.withLock { $0.revision } }

    func find(id: Int) async throws -> Tagged<TaskItem>? {
        state.withLock { $0.tasks[id] }.map(Self.tagged)
    }

    func find(ids: [Int]) async throws -> [Tagged<TaskItem>] {
        state.withLock { state in ids.compactMap { state.tasks[$0] } }.map(Self.tagged)
    }

    func create(_ task: NewTask) async throws -> Tagged<TaskItem> {
        state.withLock { Self.insert(task, into: &$0) }
    }

    private static func insert(_ task: NewTask, into state: inout State) -> Tagged<TaskItem> {
        let now = state.tick()
        let item = TaskItem(
            id: state.nextID, title: ArraySlice(task.title.utf8), description: task.description.map { ArraySlice($0.utf8) },
            status: ArraySlice(task.status.rawValue.utf8), createdAt: now, updatedAt: now
        )
        state.tasks[item.id] = item
        state.nextID += 1
        return tagged(item)
    }

    func create(
        _ task: NewTask, idempotencyKey key: String, keptFor lifetime: Duration, render: @Sendable (Tagged<TaskItem>) -> [UInt8]
    ) async throws -> IdempotentCreation {
        state.withLock { state in
            if let recorded = state.keys[key] {
                return recorded.request == task ? .replayed(recorded.answer) : .keyReused
            }
            let created = Self.insert(task, into: &state)
            let body = render(created)
            state.keys[key] = (task, RecordedAnswer(status: 201, taskID: created.value.id, etag: created.etag, body: body))
            return .created(created, body: body)
        }
    }

    func update(id: Int, _ update: TaskUpdate, if precondition: WritePrecondition) async throws -> ConditionalWrite<Tagged<TaskItem>> {
        state.withLock { state in
            guard var item = state.tasks[id] else { return .notFound }
            guard precondition.admits(Self.tagged(item).etag) else { return .preconditionFailed }
            if case .set(let title) = update.title { item.title = ArraySlice(title.utf8) }
            if case .set(let description) = update.description { item.description = description.map { ArraySlice($0.utf8) } }
            if case .set(let status) = update.status { item.status = ArraySlice(status.rawValue.utf8) }
            item.updatedAt = state.tick()
            state.tasks[id] = item
            return .written(Self.tagged(item))
        }
    }

    func delete(id: Int, if precondition: WritePrecondition) async throws -> ConditionalWrite<Void> {
        state.withLock { state in
            guard let item = state.tasks[id] else { return .notFound }
            guard precondition.admits(Self.tagged(item).etag) else { return .preconditionFailed }
            state.tasks[id] = nil
            state.revision += 1
            return .written(())
        }
    }

    func settings() async throws -> Tagged<SettingsItem> {
        state.withLock { state in
            if let settings = state.settings { return Self.tagged(settings) }
            let created = SettingsItem(darkMode: false, updatedAt: state.tick())
            state.settings = created
            return Self.tagged(created)
        }
    }

    func updateSettings(darkMode: Bool, if precondition: WritePrecondition) async throws -> ConditionalWrite<Tagged<SettingsItem>> {
        state.withLock { state in
            if let current = state.settings, !precondition.admits(Self.tagged(current).etag) { return .preconditionFailed }
            let updated = SettingsItem(darkMode: darkMode, updatedAt: state.tick())
            state.settings = updated
            return .written(Self.tagged(updated))
        }
    }

    func purgeExpiredIdempotencyKeys(limit: Int) async throws -> Int { 0 }

    func compactRevisionCounter() async throws -> Int { 0 }
}
