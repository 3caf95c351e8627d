import CLibPQ

/// Reading one libpq result: what the pipeline expects it to be, checked against its shape, and
/// copied out of libpq (`PGresult`s are freed as soon as they are read).
enum PostgresResult {
    typealias Received = PipelineStateMachine<PendingQuery, PostgresRows>.Received

    /// Classifies `result` as an answer to `expected`; `connectionOK` tells a libpq-detected
    /// protocol error (no SQLSTATE on a live connection) from a lost connection.
    static func classify(
        _ result: OpaquePointer, expected: PipelineStateMachine<PendingQuery, PostgresRows>.Expected, connectionOK: Bool
    ) -> Received {
        let status = PQresultStatus(result)
        if status == PGRES_PIPELINE_ABORTED { return .skipped }
        switch expected {
        case .check:
            guard let echoed = checkEcho(result) else { return .violation("the segment check answered \(describe(result)), not its number") }
            return .echo(echoed)
        case .prepare:
            switch status {
            case PGRES_COMMAND_OK where String(cString: PQcmdStatus(result)).isEmpty:  // ParseComplete has no tag
                return .prepared
            case PGRES_FATAL_ERROR:
                return serverErrorOrViolation(result, connectionOK: connectionOK)
            default:
                return .violation("\(describe(result)) for a PREPARE")
            }
        case .execute(let query):
            let statement = query.statement
            switch status {
            case PGRES_TUPLES_OK, PGRES_COMMAND_OK:
                let tagged = Int(String(cString: PQcmdTuples(result)))  // rows the command tag counts
                if let statement, let shape = statement.shape,
                   let mismatch = shape.mismatch(result, taggedRows: tagged, atMostOneRow: statement.returnsAtMostOneRow) {
                    return .violation("\(statement.name) answered with \(mismatch)")
                }
                return .rows(copyRows(result, affectedRows: tagged ?? 0))
            case PGRES_EMPTY_QUERY:
                return .rows(.empty)
            case PGRES_FATAL_ERROR, PGRES_NONFATAL_ERROR:
                return serverErrorOrViolation(result, connectionOK: connectionOK)
            default:
                return .violation("a result of status \(String(cString: PQresStatus(status))) for \(statement?.name ?? "a simple query")")
            }
        case .sync, .nothing:
            return .violation("\(describe(result)) that nobody asked for")
        }
    }

    /// A server error, unless libpq made it up: an error without SQLSTATE on a connection that is
    /// still up is libpq finding the protocol broken.
    private static func serverErrorOrViolation(_ result: OpaquePointer, connectionOK: Bool) -> Received {
        let error = serverError(result)
        if error.sqlState == nil && connectionOK { return .violation("libpq: \(error.message)") }
        return .serverError(error)
    }

    /// The error a result carries, with its SQLSTATE and detail.
    static func serverError(_ result: OpaquePointer) -> PostgresError {
        func field(_ code: Int32) -> String? {
            guard let value = PQresultErrorField(result, code) else { return nil }
            return String(cString: value)
        }
        let message = field(Int32(UInt8(ascii: "M"))) ?? String(cString: PQresultErrorMessage(result))
        return PostgresError(.server, message, sqlState: field(Int32(UInt8(ascii: "C"))), detail: field(Int32(UInt8(ascii: "D"))))
    }

    /// A result in a few words, for the warning that poisons a connection.
    static func describe(_ result: OpaquePointer) -> String {
        let status = String(cString: PQresStatus(PQresultStatus(result)))
        return "a \(status) result (\(PQnfields(result)) columns, \(PQntuples(result)) rows, \"\(String(cString: PQcmdStatus(result)))\")"
    }

/// The number a segment check's result echoes, if it has the check's shape.
        private static func checkEcho(_ result: OpaquePointer) -> UInt64? {
        guard PQresultStatus(result) == PGRES_TUPLES_OK, PQntuples(result) == 1, PQnfields(result) == 1,
              PQftype(result, 0) == PostgresType.int8, PQfformat(result, 0) == 1, PQgetlength(result, 0, 0) == 8,
              let value = PQgetvalue(result, 0, 0) else { return nil }
        var echoed: UInt64 = 0
        for index in 0..<8 { echoed = echoed << 8 | UInt64(UInt8(bitPattern: value[index])) }
        return echoed
    }


    private static func copyRows(_ result: OpaquePointer, affectedRows: Int) -> PostgresRows {
        let rowCount = Int(PQntuples(result))
        let columnCount = Int(PQnfields(result))
        var columns: [String] = []
        var types: [UInt32] = []
        columns.reserveCapacity(columnCount)
        types.reserveCapacity(columnCount)
        for column in 0..<Int32(columnCount) {
            columns.append(String(cString: PQfname(result, column)))
            types.append(UInt32(PQftype(result, column)))
        }
        let isBinary = columnCount > 0 && PQfformat(result, 0) == 1
        // One byte buffer (sized first) and one (start, length) pair per cell: two allocations per
        // result instead of one string per cell.
        var byteCount = 0
        for row in 0..<Int32(rowCount) {
            for column in 0..<Int32(columnCount) { byteCount += Int(PQgetlength(result, row, column)) }
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(byteCount)
        var cells: [CellRange] = []
        cells.reserveCapacity(rowCount * columnCount)
        for row in 0..<Int32(rowCount) {
            for column in 0..<Int32(columnCount) {
                if PQgetisnull(result, row, column) == 1 {
                    cells.append(CellRange(start: 0, length: -1))
                } else {
                    let length = Int(PQgetlength(result, row, column))
                    let value = UnsafeRawPointer(PQgetvalue(result, row, column)!).assumingMemoryBound(to: UInt8.self)
                    cells.append(CellRange(start: Int32(bytes.count), length: Int32(length)))
                    bytes.append(contentsOf: UnsafeBufferPointer(start: value, count: length))
                }
            }
        }
        return PostgresRows(columns: columns, types: types, isBinary: isBinary, bytes: bytes, cells: cells, affectedRows: affectedRows)
    }
}
