import Database
import EventLoopCore
import Foundation
import Logging
import Metrics
import Prometheus
import Server
import ServiceLifecycle

/// The entry point: read the configuration, prepare the database, serve until SIGTERM/SIGINT.
public enum TaskManagement {
    public static func main() async {
        raiseOpenFileLimit()
        let configuration: AppConfiguration
        do {
            configuration = try AppConfiguration(environment: ProcessInfo.processInfo.environment)
        } catch {
            FileHandle.standardError.write(Data("task-management: invalid configuration: \(error)\n".utf8))
            exit(2)
        }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardOutput(label: label)
            handler.logLevel = configuration.logLevel
            return handler
        }
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        let logger = Logger(label: "task-management")
        do {
            try await run(configuration, registry: registry, logger: logger)
        } catch {
            logger.critical("stopped", metadata: ["error": "\(error)"])
            exit(1)
        }
    }

    static func run(_ configuration: AppConfiguration, registry: PrometheusCollectorRegistry, logger: Logger) async throws {
        let application = try await Application.make(configuration, registry: registry, logger: logger)
        let group = ServiceGroup(configuration: .init(
            services: [
                .init(service: PoolService(pool: application.pool, gracePeriod: Application.poolGracePeriod)),
                .init(service: HTTPService(
                    server: application.server, readiness: application.readiness, gracePeriod: configuration.shutdownGrace,
                    onDrain: { [feed = application.feed] in feed.closeAll() }
                )),
                .init(service: application.housekeeping),
                .init(service: application.eventRelay),
            ],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        ))
        try await group.run()
        await application.eventLoops.stop()
        logger.info("shut down cleanly")
    }
}

/// The assembled server: event loops, pool, schema, router, HTTP server. Tests build one on
/// port 0.
struct Application: Sendable {
    /// Shared by the server and the pool: a request's socket, handler and database connection
    /// are served by one loop thread whenever a connection of that loop is free.
    let eventLoops: EventLoopGroup
    let pool: ConnectionPool
    let server: HTTPServer
    let readiness: Readiness
    /// Expired idempotency keys and the revision counter, in the background.
    let housekeeping: Housekeeping
    /// The change feed, and what fills it from PostgreSQL's notifications.
    let feed: EventFeed
    let eventRelay: EventRelay
    /// What the router serves (method and template), for checking `openapi.yaml` against it.
    let routeTable: [(method: HTTPMethod, template: String)]

    /// How long the pool lets queries in flight finish at shutdown, after the server drained.
    static let poolGracePeriod = Duration.seconds(2)
    /// How long start-up waits between attempts to create the schema while PostgreSQL is unreachable.
    static let schemaRetryDelay = Duration.seconds(1)

    /// Opens the pool, creates missing tables (retrying until `startupTimeout` while PostgreSQL
    /// is unreachable), and builds the server without starting it.
    static func make(_ configuration: AppConfiguration, registry: PrometheusCollectorRegistry, logger: Logger) async throws -> Application {
        let openAPIJSON = try OpenAPIDocument.json()
        let eventLoops = EventLoopGroup(count: configuration.eventLoops, namePrefix: "loop")
        let pool = ConnectionPool(configuration: PoolConfiguration(
            conninfo: configuration.databaseURL, maxConnections: configuration.poolSize,
            maxWaiters: configuration.maxWaiters, acquireTimeout: configuration.acquireTimeout,
            connectTimeout: configuration.connectTimeout, pipelineDepth: configuration.pipelineDepth,
            lookupPipelineDepth: configuration.lookupPipelineDepth,
            queryTimeout: configuration.queryTimeout, stallThreshold: configuration.stallThreshold,
            transactionPooling: configuration.transactionPooling
        ), logger: logger, eventLoops: eventLoops)
        await pool.start()
        try await bootstrapSchema(pool, within: configuration.startupTimeout, logger: logger)

        let readiness = Readiness(pool: pool, probeTimeout: configuration.readyProbeTimeout)
        let serverConfiguration = ServerConfiguration(
            host: configuration.host, port: configuration.port, eventLoops: configuration.eventLoops,
            maxBodyBytes: configuration.maxBodyBytes, maxHeaderBytes: configuration.maxHeaderBytes,
            timeout: configuration.httpTimeout, maxPendingOutputBytes: configuration.maxPendingOutputBytes,
            maxPendingInputBytes: configuration.maxPendingInputBytes, readBufferBytes: configuration.readBufferBytes,
            maxConnections: configuration.maxConnections
        )
        let boundary = ErrorBoundary(retryAfterSeconds: serverConfiguration.retryAfterSeconds, logger: logger)
        var router = Router(logger: logger, errorResponder: boundary.response)
        router.use(ObservabilityMiddleware(logger: logger, metrics: RequestMetrics()))
        router.use(CORSMiddleware(origins: configuration.corsOrigins, exposedHeaders: ["ETag", "Location", "Idempotent-Replayed", "Retry-After", "X-Request-ID"]))
        router.use(CachePolicy())
        let store = PostgresTaskStore(pool: pool, coalescing: configuration.coalesceReads ? .init(maxReads: configuration.poolSize) : nil)
        TaskRoutes(
            store: store, requireIfMatch: configuration.requireIfMatch, idempotencyKeyLifetime: configuration.idempotencyKeyLifetime,
            retryAfterSeconds: serverConfiguration.retryAfterSeconds,
            streaming: ListStreaming(
                bufferedRows: configuration.listBufferedRows, fetchRows: configuration.listFetchRows,
                slots: .init(capacity: configuration.listMaxStreams), slotWait: configuration.acquireTimeout
            )
        ).register(on: &router)
        OperationsRoutes(
            readiness: readiness, registry: registry, pool: pool, retryAfterSeconds: serverConfiguration.retryAfterSeconds
        ).register(on: &router)
        OpenAPIRoutes(json: openAPIJSON).register(on: &router)
        let feed = EventFeed(limits: configuration.eventLimits)
        // The stream's `retry:` hint is the same wait a 503's Retry-After gives.
        EventRoutes(feed: feed, reconnectMilliseconds: serverConfiguration.retryAfterSeconds * 1000).register(on: &router)

        let server = HTTPServer(configuration: serverConfiguration, responder: router, logger: logger, eventLoops: eventLoops)
        let housekeeping = Housekeeping(store: store, interval: configuration.idempotencyPurgeInterval, logger: logger)
        return Application(
            eventLoops: eventLoops, pool: pool, server: server, readiness: readiness, housekeeping: housekeeping, feed: feed,
            eventRelay: EventRelay(pool: pool, store: store, feed: feed, listenURL: configuration.listenURL, logger: logger),
            routeTable: router.routeTable
        )
    }

    private static func bootstrapSchema(_ pool: ConnectionPool, within timeout: Duration, logger: Logger) async throws {
        let deadline = ContinuousClock.now + timeout
        while true {
            do {
                if try await !Schema.bootstrap(pool) {
                    logger.warning("the revision trigger on tasks is missing or disabled (this role may not add it): the task list carries no ETag")
                }
                return
            } catch let error as PostgresError where error.isTransient && ContinuousClock.now < deadline {
                logger.warning("database not ready, retrying", metadata: ["error": "\(error)"])
                try await Task.sleep(for: schemaRetryDelay)
            }
        }
    }
}
