// swift-tools-version: 6.2
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

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
        .executableTarget(
            name: "fulcrum",
            dependencies: [
                "FulcrumCore", "FulcrumConfig",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        // Algorithm quality and speed evidence (Maglev evaluation, ns per pick). Run in release.
        .executableTarget(
            name: "fulcrum-bench",
            dependencies: ["FulcrumCore"],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "FulcrumCoreTests", dependencies: ["FulcrumCore"], swiftSettings: swiftSettings),
        .testTarget(
            name: "FulcrumConfigTests",
            dependencies: ["FulcrumConfig", "FulcrumCore"],
            resources: [.copy("Corpus")],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "FulcrumCLITests", dependencies: ["fulcrum"], swiftSettings: swiftSettings),
    ]
)
