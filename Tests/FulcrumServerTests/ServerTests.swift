import Foundation
import FulcrumConfig
import FulcrumCore
import FulcrumDemo
import FulcrumServer
import FulcrumTestSupport
import NIOCore
import Testing

@Suite("Fulcrum server: proxy, health, reload")
struct ServerTests {
    @Test("each algorithm spreads (or sticks) requests through the real proxy", arguments: AlgorithmKind.allCases)
    func distribution(kind: AlgorithmKind) async throws {
        try await ServerHarness.with(backends: [DemoBehavior(), DemoBehavior(), DemoBehavior()]) { addresses in
            """
            pools:
              web:
                algorithm: \(kind.rawValue)\(kind == .hash ? "\n    hash_key: uri" : "")
                backends: [\(addresses.joined(separator: ", "))]
            listeners:
              - { name: www, bind: 127.0.0.1:0, mode: http, pool: web }
            """
        } _: { harness in
            let report = try await LoadDriver.run(
                port: harness.port, requests: 600, concurrency: 6, group: harness.group)
            #expect(report.failed == 0, "\(report.statusCounts) errors \(report.errors)")
            let counts = harness.backends.map { report.byBackend[$0.name, default: 0] }
            if kind == .boundedLoad {
                // One key, six concurrent connections: the key's own backend takes the most, the cap spills the rest.
                #expect(counts.max()! >= 200, "\(counts)")
            } else if kind.usesKey {
                // Every request has the same key (client 127.0.0.1, URI /): it sticks to one backend.
                #expect(counts.filter { $0 > 0 }.count == 1, "\(counts)")
            } else {
                for count in counts { #expect(count >= 60, "\(kind): \(counts)") }
            }
        }
    }

    /// The probe timeout is as long as the interval allows: the demo backends share this process's two loaded
    /// cores with the load driver, and with 150 ms a starved machine failed two probes in a row on the *healthy*
    /// backends too, marking every backend down for a moment (503s). The killed backend refuses connections,
    /// so its probes fail at once whatever the timeout; the timeout only enters the bound as the probe that
    /// may be in flight when it dies.
    static let killInterval = Duration.milliseconds(500)
    static let killTimeout = Duration.milliseconds(500)
    static let killFall = 2
    /// Scheduling slack on a loaded 2-core machine (other builds and suites running): the prober, the admin
    /// state and this task all need CPU time to notice.
    static let killSlack = Duration.seconds(1)
    static var killCheck: String {
        "{ type: http, path: /healthz, interval: \(formatDuration(killInterval)), "
            + "timeout: \(formatDuration(killTimeout)), rise: 2, fall: \(killFall), jitter: 0 }"
    }

    @Test("a backend killed under load: zero failed GETs, marked down within fall × interval")
    func backendKilledMidLoad() async throws {
        try await ServerHarness.with(backends: [DemoBehavior(), DemoBehavior(), DemoBehavior()]) { addresses in
            """
            pools:
              web:
                algorithm: round-robin
                health_check: \(Self.killCheck)
                backends: [\(addresses.joined(separator: ", "))]
            listeners:
              - { name: www, bind: 127.0.0.1:0, mode: http, pool: web, retries: 2 }
            """
        } _: { harness in
            let pool = try await harness.pool
            let victim = harness.backends[0]
            try await withThrowingTaskGroup(of: LoadReport.self) { tasks in
                tasks.addTask {
                    try await LoadDriver.run(port: harness.port, requests: 3000, concurrency: 8, group: harness.group)
                }
                #expect(await eventually(within: trafficArrivalBound) { victim.requests >= 100 })
                try await victim.stop()
                let stopped = ContinuousClock.now
                // fall × interval + the timeout of a probe in flight when it died + scheduling slack.
                let bound = Self.killInterval * Self.killFall + Self.killTimeout + Self.killSlack
                #expect(
                    await eventually(within: bound * 2) {
                        pool.snapshot().member(Endpoint(harness.addresses[0])!)?.state == .down
                    })
                let downAfter = ContinuousClock.now - stopped
                #expect(downAfter < bound, "marked down after \(downAfter), bound \(bound)")
                let report = try #require(try await tasks.next())
                #expect(report.failed == 0, "statuses \(report.statusCounts), errors \(report.errors)")
                #expect(report.succeeded == 3000)
            }
        }
    }

    @Test("backups serve only when every primary is down; nothing up answers 503")
    func backupsThen503() async throws {
        try await ServerHarness.with(backends: [DemoBehavior(), DemoBehavior(), DemoBehavior()]) { addresses in
            """
            pools:
              web:
                health_check: { type: http, path: /healthz, interval: 100ms, timeout: 100ms, rise: 1, fall: 2, jitter: 0 }
                backends:
                  - \(addresses[0])
                  - \(addresses[1])
                  - { address: \(addresses[2]), backup: true }
            listeners:
              - { name: www, bind: 127.0.0.1:0, mode: http, pool: web }
            """
        } _: { harness in
            let pool = try await harness.pool
            for _ in 0..<10 { #expect(try await harness.get().header("X-Backend") != "b2") }
            harness.backends[0].setHealthy(false)
            harness.backends[1].setHealthy(false)
            #expect(await eventually { pool.snapshot().usingBackups })
            for _ in 0..<5 { #expect(try await harness.get().header("X-Backend") == "b2") }
            harness.backends[2].setHealthy(false)
            #expect(await eventually { pool.snapshot().candidates.isEmpty })
            let response = try await harness.get()
            #expect(response.status == 503)
            #expect(String(buffer: response.body).contains("no backend"))
        }
    }

    @Test("reload with a changed pool: new backends take traffic, an open keep-alive connection survives")
    func reloadChangedPool() async throws {
        try await ServerHarness.with(backends: [DemoBehavior(), DemoBehavior()]) { addresses in
            """
            pools:
              web: { algorithm: round-robin, backends: [\(addresses[0])] }
            listeners:
              - { name: www, bind: 127.0.0.1:0, mode: http, pool: web }
            """
        } _: { harness in
            let client = try await DemoHTTPClient.connect(port: harness.port, group: harness.group)
            #expect(try await client.get("/").header("X-Backend") == "b0")
            let reloaded = try ConfigLoader.load(
                yaml: """
                    pools:
                      web: { algorithm: round-robin, backends: [\(harness.addresses[0]), \(harness.addresses[1])] }
                    listeners:
                      - { name: www, bind: 127.0.0.1:0, mode: http, pool: web }
                    """)
            #expect(await harness.server.reload(reloaded))
            var seen: Set<String> = []
            for _ in 0..<6 { seen.insert(try await client.get("/").header("X-Backend") ?? "?") }
            #expect(seen == ["b0", "b1"])
            #expect(client.isActive)
            await client.close()
        }
    }

    @Test("reload from a broken file is rejected and the running config keeps serving")
    func reloadBrokenFile() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("fulcrum-reload-\(getpid()).yaml").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try await ServerHarness.with(backends: [DemoBehavior()], configPath: path) { addresses in
            """
            pools:
              web: { backends: [\(addresses[0])] }
            listeners:
              - { name: www, bind: 127.0.0.1:0, mode: http, pool: web }
            """
        } _: { harness in
            try "pools:\n  web: { algorithm: nope, backends: [1.2.3.4] }\n".write(
                toFile: path, atomically: true, encoding: .utf8)
            #expect(await harness.server.reloadFromFile() == false)
            #expect(try await harness.get().status == 200)
            #expect(try await harness.pool.snapshot().members.count == 1)
        }
    }
}

@Suite("Scale-in through AdminControl")
struct ForcedRemovalTests {
    @Test("a forced removal closes the connections open to the backend; a drained one lets them finish")
    func forcedRemovalClosesConnections() async throws {
        try await ServerHarness.with(backends: [DemoBehavior(), DemoBehavior()]) { addresses in
            """
            pools:
              web: { algorithm: round-robin, backends: [\(addresses.joined(separator: ", "))] }
            listeners:
              - { name: www, bind: 127.0.0.1:0, mode: tcp, pool: web }
            """
        } _: { harness in
            // Two TCP flows through the proxy (round robin: one per backend), kept open with keep-alive.
            let first = try await DemoHTTPClient.connect(port: harness.port, group: harness.group)
            let second = try await DemoHTTPClient.connect(port: harness.port, group: harness.group)
            let firstBackend = try #require(try await first.get("/").header("X-Backend"))
            let secondBackend = try #require(try await second.get("/").header("X-Backend"))
            #expect(Set([firstBackend, secondBackend]) == ["b0", "b1"])
            let (forced, kept) = firstBackend == "b0" ? (first, second) : (second, first)

            _ = try await harness.server.removeBackend(
                pool: "web", endpoint: Endpoint(harness.addresses[0])!, force: true, drainTimeout: .zero)
            #expect(await eventually { !forced.isActive })
            #expect(kept.isActive)
            #expect(try await kept.get("/").header("X-Backend") == "b1")
            #expect(try await harness.pool.snapshot().members.count == 1)
            await kept.close()
        }
    }
}
