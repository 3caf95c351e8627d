// swift-tools-version:6.0
import PackageDescription

/// Nonisolated async functions run on their caller's executor (SE-0461) instead of hopping to
/// the global one: a request's handler chain stays on its event loop with no executor switch per
/// call. Every target that calls across these modules needs the same setting (it changes how
/// async function types are mangled).
let layerSettings: [SwiftSetting] = [.enableUpcomingFeature("NonisolatedNonsendingByDefault")]

let package = Package(
    name: "task-management",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "task-management", targets: ["Main"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
    ],
    targets: [
        // MARK: C libraries (module map + shim header only)
        .systemLibrary(
            name: "CLibEvent",
            pkgConfig: "libevent_pthreads",
            providers: [.apt(["libevent-dev"])]
        ),
        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),

        // MARK: Layers
        .target(
            name: "EventLoopCore",
            dependencies: ["CLibEvent"]
        ),
        .target(
            name: "Server",
            dependencies: [
                "EventLoopCore",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: layerSettings
        ),
        .target(
            name: "Database",
            dependencies: [
                "CLibPQ",
                "EventLoopCore",
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: layerSettings
        ),
        .target(
            name: "App",
            dependencies: [
                "Server",
                "Database",
                "EventLoopCore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
            ],
            // The API's description, compiled in (`OpenAPIDocument`) and served.
            resources: [.embedInCode("openapi.yaml")],
            swiftSettings: layerSettings
        ),

        .executableTarget(name: "Main", dependencies: ["App"], swiftSettings: layerSettings),

        // MARK: Fuzz targets (`make fuzz` builds them with libFuzzer; a plain build replays files)
        .target(name: "FuzzSupport", path: "Fuzz/FuzzSupport"),
        .executableTarget(
            name: "HTTPParserFuzz", dependencies: ["Server", "FuzzSupport"], path: "Fuzz/HTTPParserFuzz", swiftSettings: layerSettings
        ),
        .executableTarget(
            name: "JSONFuzz", dependencies: ["App", "Server", "FuzzSupport"], path: "Fuzz/JSONFuzz", swiftSettings: layerSettings
        ),
        .executableTarget(
            name: "RouterFuzz",
            dependencies: ["Server", "FuzzSupport", .product(name: "Logging", package: "swift-log")],
            path: "Fuzz/RouterFuzz", swiftSettings: layerSettings
        ),

        // MARK: Tests
        .target(
            name: "TestSupport",
            path: "Tests/TestSupport",
            swiftSettings: layerSettings
        ),
        .testTarget(name: "ServerTests", dependencies: ["Server", "TestSupport"], swiftSettings: layerSettings),
        .testTarget(name: "DatabaseTests", dependencies: ["Database", "TestSupport"], swiftSettings: layerSettings),
        .testTarget(name: "AppTests", dependencies: ["App", "Server", "Database", "EventLoopCore", "TestSupport"], swiftSettings: layerSettings),
    ],
    swiftLanguageModes: [.v6]
)
