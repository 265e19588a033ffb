// swift-tools-version: 6.2
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

// Products of the dependencies, named once.
extension Target.Dependency {
    static let nioCore = product(name: "NIOCore", package: "swift-nio")
    static let nioPosix = product(name: "NIOPosix", package: "swift-nio")
    static let nioHTTP1 = product(name: "NIOHTTP1", package: "swift-nio")
    static let nioEmbedded = product(name: "NIOEmbedded", package: "swift-nio")
    static let logging = product(name: "Logging", package: "swift-log")
    static let serviceLifecycle = product(name: "ServiceLifecycle", package: "swift-service-lifecycle")
    static let unixSignals = product(name: "UnixSignals", package: "swift-service-lifecycle")
}

let package = Package(
    name: "Fulcrum",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "fulcrum", targets: ["fulcrum"]),
        .library(name: "FulcrumCore", targets: ["FulcrumCore"]),
        .library(name: "FulcrumConfig", targets: ["FulcrumConfig"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
        // HMAC-SHA256 for HA mirroring (FulcrumHA only).
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.0"),
    ],
    targets: [
        // Pure: no NIO, no syscalls. Backends, pools, snapshots, algorithms, health and outlier state.
        .target(name: "FulcrumCore", swiftSettings: swiftSettings),
        // Pure: config model, YAML decoding, validation with path + line:column.
        .target(
            name: "FulcrumConfig",
            dependencies: ["FulcrumCore", .product(name: "Yams", package: "Yams")],
            swiftSettings: swiftSettings
        ),
        // NIO: listeners (SO_REUSEPORT per event loop), TCP glue, HTTP/1.1 proxy, upstream pools.
        .target(
            name: "FulcrumProxy",
            dependencies: [
                "FulcrumCore", "FulcrumConfig",
                .nioCore,
                .nioPosix,
                .nioHTTP1,
                .logging,
            ],
            swiftSettings: swiftSettings
        ),
        // NIO: active TCP/HTTP probes feeding the pure health state machine.
        .target(
            name: "FulcrumHealth",
            dependencies: [
                "FulcrumCore", "FulcrumConfig",
                .nioCore,
                .nioPosix,
                .nioHTTP1,
                .logging,
                .serviceLifecycle,
            ],
            swiftSettings: swiftSettings
        ),
        // Demo backends and a small load driver: used by `fulcrum demo`, the integration tests and benches.
        .target(
            name: "FulcrumDemo",
            dependencies: [
                .nioCore,
                .nioPosix,
                .nioHTTP1,
            ],
            swiftSettings: swiftSettings
        ),
        // Admin HTTP API: pools and backends, scale-out/in, drain, /metrics (swift-metrics + swift-prometheus), /ui.
        .target(
            name: "FulcrumAdmin",
            dependencies: [
                "FulcrumCore", "FulcrumConfig",
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .nioCore,
                .nioPosix,
                .nioHTTP1,
                .logging,
                .serviceLifecycle,
            ],
            swiftSettings: swiftSettings
        ),
        // Tiny C shim: TUN ioctls, sockaddr_ll, PACKET_VNET_HDR, mmsghdr/recvmmsg/sendmmsg, PACKET_FANOUT, netlink.
        .target(name: "CFulcrumLinux"),
        // Packet plane: header parsing/rewriting, checksums, flow table (pure) + IO worker threads (TUN / AF_PACKET).
        .target(
            name: "FulcrumPacket",
            dependencies: ["FulcrumCore", "CFulcrumLinux"],
            swiftSettings: swiftSettings
        ),
        // High availability: VRRPv3 (pure state machine + raw-socket transport), VIP via netlink, GARP, mirroring.
        .target(
            name: "FulcrumHA",
            dependencies: [
                "FulcrumCore", "FulcrumPacket", "CFulcrumLinux",
                .product(name: "Crypto", package: "swift-crypto"),
                .logging,
                .serviceLifecycle,
            ],
            swiftSettings: swiftSettings
        ),
        // Shared configuration store: the YAML file (default) or etcd v3 through its JSON gateway; membership.
        .target(
            name: "FulcrumCluster",
            dependencies: [
                "FulcrumCore", "FulcrumConfig", .product(name: "Yams", package: "Yams"),
                .nioCore,
                .nioPosix,
                .nioHTTP1,
                .logging,
                .serviceLifecycle,
            ],
            swiftSettings: swiftSettings
        ),
        // Composition root: builds every Service from the config; ServiceGroup, SIGTERM drain, SIGHUP reload.
        .target(
            name: "FulcrumServer",
            dependencies: [
                "FulcrumCore", "FulcrumConfig", "FulcrumProxy", "FulcrumHealth", "FulcrumAdmin", "FulcrumCluster",
                "FulcrumHA", "FulcrumPacket",
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .nioCore,
                .nioPosix,
                .logging,
                .serviceLifecycle,
                .unixSignals,
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "fulcrum",
            dependencies: [
                "FulcrumCore", "FulcrumConfig", "FulcrumServer", "FulcrumDemo", "FulcrumCluster", "FulcrumPacket",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .logging,
                .serviceLifecycle,
                .unixSignals,
                .nioCore,
                .nioPosix,
            ],
            swiftSettings: swiftSettings
        ),
        // Algorithm quality and speed evidence (Maglev evaluation, ns per pick). Run in release.
        .executableTarget(
            name: "fulcrum-bench",
            dependencies: ["FulcrumCore"],
            swiftSettings: swiftSettings
        ),
        // Helpers shared by the test targets (bounded waiting).
        .target(
            name: "FulcrumTestSupport",
            dependencies: [
                "FulcrumCluster",
                .nioCore, .nioPosix,
            ],
            path: "Tests/FulcrumTestSupport",
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "FulcrumCoreTests", dependencies: ["FulcrumCore"], swiftSettings: swiftSettings),
        .testTarget(
            name: "FulcrumPacketTests", dependencies: ["FulcrumPacket", "FulcrumCore", "CFulcrumLinux", "fulcrum"],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "FulcrumHATests",
            dependencies: ["FulcrumHA", "FulcrumCore", "FulcrumPacket", "FulcrumTestSupport", "fulcrum"],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "FulcrumConfigTests",
            dependencies: ["FulcrumConfig", "FulcrumCore"],
            resources: [.copy("Corpus")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "FulcrumCLITests", dependencies: ["fulcrum", "FulcrumTestSupport"], swiftSettings: swiftSettings),
        .testTarget(
            name: "FulcrumProxyTests",
            dependencies: [
                "FulcrumTestSupport", "FulcrumProxy", "FulcrumCore", "FulcrumConfig", "FulcrumDemo",
                .nioCore,
                .nioPosix,
                .nioHTTP1,
                .nioEmbedded,
                .logging,
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "FulcrumHealthTests",
            dependencies: [
                "FulcrumTestSupport",
                "FulcrumHealth", "FulcrumCore", "FulcrumConfig", "FulcrumDemo",
                .nioCore,
                .nioPosix,
                .logging,
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "FulcrumAdminTests",
            dependencies: [
                "FulcrumTestSupport", "FulcrumAdmin", "FulcrumServer", "FulcrumCore", "FulcrumConfig", "FulcrumDemo",
                .nioCore,
                .nioPosix,
                .logging,
                .serviceLifecycle,
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "FulcrumDemoTests",
            dependencies: [
                "FulcrumTestSupport",
                "FulcrumDemo",
                .nioCore,
                .nioPosix,
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "FulcrumClusterTests",
            dependencies: [
                "FulcrumTestSupport", "FulcrumCluster", "FulcrumConfig", "FulcrumCore",
                .nioCore,
                .nioPosix,
                .logging,
                .serviceLifecycle,
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "FulcrumServerTests",
            dependencies: [
                "FulcrumTestSupport",
                "FulcrumAdmin", "FulcrumServer", "FulcrumProxy", "FulcrumCore", "FulcrumConfig", "FulcrumDemo",
                "FulcrumCluster", "fulcrum",
                .nioCore,
                .nioPosix,
                .logging,
                .serviceLifecycle,
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
