import ArgumentParser
import Foundation
import FulcrumConfig
import FulcrumCore
import FulcrumDemo
import FulcrumServer
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization
import UnixSignals

/// `fulcrum demo`: four demo backends on loopback behind a balancer, in one process, with a live table.
struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a balancer in front of four in-process demo backends and show what it does.",
        discussion: """
            Backends: alpha and bravo answer at once, charlie is slow (40 ms), delta fails its health checks \
            for 4 s every 12 s. Open the printed URL, or pass --requests N to drive N requests and print the \
            final table. Ctrl-C stops everything.
            """)

    @Option(help: "Port of the demo listener on 127.0.0.1 (0 picks a free one).")
    var port: Int = 8080

    @Option(help: "Port of the admin API and dashboard (/ui) on 127.0.0.1 (0 picks a free one).")
    var adminPort: Int = 9900

    @Option(help: "Balancing algorithm: \(AlgorithmKind.allCases.map(\.rawValue).joined(separator: ", ")).")
    var algorithm: String = AlgorithmKind.leastConnections.rawValue

    @Option(help: "Drive this many requests through the balancer, print the final table and exit.")
    var requests: Int?

    @Option(help: "Connections used by --requests.")
    var concurrency: Int = 8

    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        guard AlgorithmKind(rawValue: algorithm) != nil else {
            throw ValidationError(
                "unknown algorithm '\(algorithm)'; one of: \(AlgorithmKind.allCases.map(\.rawValue).joined(separator: ", "))"
            )
        }
        guard (0...65535).contains(port), (0...65535).contains(adminPort) else {
            throw ValidationError("--port and --admin-port must be 0-65535")
        }
        guard requests.map({ $0 >= 1 }) ?? true, concurrency >= 1 else {
            throw ValidationError("--requests and --concurrency must be at least 1")
        }
    }

    func run() async throws {
        let logger = logging.bootstrap()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        var backends: [DemoBackend] = []
        do {
            for (name, behavior) in DemoFleet.behaviors {
                backends.append(try await DemoBackend.start(name: name, behavior: behavior, group: group))
            }
            let config = try DemoFleet.config(
                algorithm: algorithm, port: port, adminPort: adminPort, backendPorts: backends.map(\.port))
            let server = try await FulcrumServer.start(config: config, group: group, logger: logger)
            let listenPort = await server.port(ofListener: DemoFleet.listener) ?? port
            let pool = await server.pool(named: DemoFleet.pool)!
            let names = Dictionary(uniqueKeysWithValues: backends.map { ("127.0.0.1:\($0.port)", $0.name) })
            let table = DemoTable(pool: pool, names: names)
            printNow("Fulcrum demo: http://127.0.0.1:\(listenPort)/  (algorithm \(algorithm); Ctrl-C stops)")
            if let dashboard = await server.adminPort {
                printNow(
                    "Dashboard:    http://127.0.0.1:\(dashboard)/ui  (fulcrum ctl --admin http://127.0.0.1:\(dashboard) ...)"
                )
            }
            if let requests {
                try await drive(requests, port: listenPort, server: server, table: table, group: group, logger: logger)
            } else {
                try await runUntilSignalled([server, DemoTablePrinter(table: table)], logger: logger)
            }
        } catch {
            for backend in backends { try? await backend.stop() }
            try? await group.shutdownGracefully()
            if let exit = error as? ExitCode { throw exit }
            printError("fulcrum demo: \(error)")
            throw ExitCode.failure
        }
        for backend in backends { try? await backend.stop() }
        try await group.shutdownGracefully()
    }

    /// Serves while driving `count` requests, then stops gracefully and prints the final table.
    private func drive(
        _ count: Int, port: Int, server: FulcrumServer, table: DemoTable, group: any EventLoopGroup, logger: Logger
    ) async throws {
        let serviceGroup = ServiceGroup(
            configuration: .init(
                services: [.init(service: server)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await serviceGroup.run() }
            let report = try await LoadDriver.run(
                port: port, requests: count, concurrency: concurrency, group: group)
            await serviceGroup.triggerGracefulShutdown()
            try await tasks.waitForAll()
            printNow(table.render())
            printNow(
                "\(report.succeeded) of \(report.requests) requests succeeded, \(report.errors) errors, "
                    + "statuses \(report.statusCounts.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", ")); "
                    + "client p50 \(DemoTable.format(report.p50)), p99 \(DemoTable.format(report.p99))")
        }
    }
}

/// The demo's backends and its embedded config.
enum DemoFleet {
    static let pool = "demo"
    static let listener = "demo"

    static let behaviors: [(String, DemoBehavior)] = [
        ("alpha", DemoBehavior()),
        ("bravo", DemoBehavior()),
        ("charlie", DemoBehavior(latency: .milliseconds(40))),
        ("delta", DemoBehavior(flaky: FlakySchedule(up: .seconds(8), down: .seconds(4)))),
    ]

    /// The embedded default config, read through the same loader as any file.
    static func config(algorithm: String, port: Int, adminPort: Int, backendPorts: [Int]) throws -> FulcrumConfig {
        let yaml = """
            admin: { listen: 127.0.0.1:\(adminPort) }
            pools:
              \(pool):
                algorithm: \(algorithm)
                health_check: { type: http, path: /healthz, interval: 1s, timeout: 500ms, rise: 2, fall: 2 }
                outlier_detection: { consecutive_failures: 5, base_ejection_time: 5s, max_ejection_time: 30s }
                slow_start: 5s
                backends: [\(backendPorts.map { "127.0.0.1:\($0)" }.joined(separator: ", "))]
            listeners:
              - { name: \(listener), bind: 127.0.0.1:\(port), mode: http, pool: \(pool), retries: 2 }
            """
        return try ConfigLoader.load(yaml: yaml)
    }
}

/// The live table: one row per backend with its state, requests, active connections and p50 latency.
struct DemoTable: Sendable {
    let pool: Pool
    let names: [String: String]

    func render() -> String {
        let header = ["backend", "address", "state", "requests", "active", "p50"]
        let rows = pool.snapshot().members.map { member -> [String] in
            let stats = member.backend.stats
            return [
                names[member.endpoint.description] ?? "-", member.endpoint.description, member.state.rawValue,
                "\(stats.totalRequests.load(ordering: .relaxed))", "\(stats.active)",
                stats.latency.quantile(0.5).map { DemoTable.format(nanos: $0) } ?? "-",
            ]
        }
        let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
        func line(_ cells: [String]) -> String {
            zip(cells, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ")
        }
        return ([line(header)] + rows.map(line)).joined(separator: "\n")
    }

    static func format(nanos: UInt64) -> String {
        nanos >= 1_000_000 ? "\(nanos / 1_000_000) ms" : "\(nanos / 1_000) µs"
    }

    static func format(_ duration: Duration) -> String {
        format(nanos: duration.nanoseconds)
    }
}

/// Prints the table every second until graceful shutdown.
struct DemoTablePrinter: Service {
    let table: DemoTable

    func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            try? await Task.sleep(for: .seconds(1))
            printNow("\n" + table.render())
        }
    }
}

/// Writes a line to standard output at once: `print` is block-buffered when stdout is a pipe or a
/// file, and the live table must appear as it is printed.
func printNow(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}
