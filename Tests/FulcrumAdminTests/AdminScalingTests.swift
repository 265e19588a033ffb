import FulcrumAdmin
import FulcrumCore
import FulcrumDemo
import FulcrumServer
import FulcrumTestSupport
import NIOCore
import NIOPosix
import Testing

@Suite("Admin API: scale-out, scale-in and draining under load")
struct AdminScalingTests {
    /// The harness's pool with health checks that tolerate a starved machine. With the harness's 100 ms probe
    /// timeout and `fall: 2`, a parallel test run on a busy 2-core machine saw every backend marked down for a
    /// moment and the proxy answer 503 "no backend available" (e.g. `statuses [503: 133, 200: 2867],
    /// errors 0`): correct behaviour for that configuration, not what these tests are about. Checks still run.
    static func loadYAML(_ addresses: [String]) -> String {
        """
        pools:
          web:
            algorithm: round-robin
            health_check: { type: http, path: /healthz, interval: 1s, timeout: 1s, rise: 1, fall: 3, jitter: 0 }
            backends: [\(addresses.joined(separator: ", "))]
        listeners:
          - { name: www, bind: 127.0.0.1:0, mode: http, pool: web, retries: 2 }
        """
    }

    /// Every backend's state and last health check, to tell 503s from health checks apart from a proxy failure.
    static func poolState(_ harness: AdminHarness) async -> String {
        guard let backends = try? await harness.backendsJSON() else { return "pool state unavailable" }
        return backends.sorted { $0.key < $1.key }.map { address, json in
            "\(address): \(json["state"]?.stringValue ?? "?"), last check \(json["last_check"].map { "\($0)" } ?? "-")"
        }.joined(separator: "; ")
    }

    @Test("scale-out under load: a POSTed backend gets traffic and no request fails")
    func scaleOut() async throws {
        try await AdminHarness.with(backends: [DemoBehavior(), DemoBehavior()], yaml: Self.loadYAML) {
            harness in
            let added = try await DemoBackend.start(name: "new", behavior: DemoBehavior(), group: harness.group)
            let address = "127.0.0.1:\(added.port)"
            try await withThrowingTaskGroup(of: LoadReport.self) { tasks in
                tasks.addTask {
                    try await LoadDriver.run(port: harness.port, requests: 3000, concurrency: 8, group: harness.group)
                }
                #expect(await eventually(within: trafficArrivalBound) { harness.backends[0].requests >= 100 })
                let response = try await harness.call(
                    "POST", "/api/v1/pools/web/backends", body: #"{"address":"\#(address)","healthy":true}"#)
                #expect(response.status == 201, "\(response.json.serialized)")
                #expect(response.json["state"] == "up")
                #expect(
                    try await eventually(within: trafficArrivalBound) {
                        (try await harness.backendsJSON()[address]?["requests"]?.intValue ?? 0) >= 50
                    })
                let report = try #require(try await tasks.next())
                var state = ""
                if report.failed > 0 { state = await Self.poolState(harness) }
                #expect(report.failed == 0, "statuses \(report.statusCounts), errors \(report.errors); \(state)")
                #expect(added.requestsByPath()["/", default: 0] > 0)
            }
            try await added.stop()
        }
    }

    @Test("scale-in under load: DELETE drains, returns after its connections end, no request fails")
    func scaleIn() async throws {
        try await AdminHarness.with(
            backends: [DemoBehavior(), DemoBehavior(), DemoBehavior()], yaml: Self.loadYAML
        ) { harness in
            let victim = harness.addresses[0]
            let pool = try #require(await harness.server.pool(named: "web"))
            let backend = try #require(pool.snapshot().member(Endpoint(victim)!)?.backend)
            try await withThrowingTaskGroup(of: LoadReport.self) { tasks in
                tasks.addTask {
                    try await LoadDriver.run(port: harness.port, requests: 3000, concurrency: 8, group: harness.group)
                }
                #expect(await eventually(within: trafficArrivalBound) { harness.backends[0].requests >= 100 })
                let response = try await harness.call("DELETE", "/api/v1/pools/web/backends/\(victim)?timeout=5s")
                #expect(response.status == 200, "\(response.json.serialized)")
                #expect(response.json["removed"] == .string(victim))
                #expect(response.json["persisted"] == false)
                #expect(backend.stats.active == 0)
                #expect(try await harness.backendsJSON()[victim] == nil)
                let servedAtRemoval = harness.backends[0].requestsByPath()["/", default: 0]
                let report = try #require(try await tasks.next())
                var state = ""
                if report.failed > 0 { state = await Self.poolState(harness) }
                #expect(report.failed == 0, "statuses \(report.statusCounts), errors \(report.errors); \(state)")
                #expect(harness.backends[0].requestsByPath()["/", default: 0] == servedAtRemoval)
            }
        }
    }

    @Test("PATCH weight and state: a draining backend shows as draining and gets no new requests")
    func patch() async throws {
        try await AdminHarness.with(backends: [DemoBehavior(), DemoBehavior()]) {
            AdminHarness.yaml($0, algorithm: "weighted-round-robin", health: false)
        } _: { harness in
            let path = "/api/v1/pools/web/backends/\(harness.addresses[1])"
            let weighted = try await harness.call("PATCH", path, body: #"{"weight":3}"#)
            #expect(weighted.status == 200)
            #expect(weighted.json["weight"] == 3)
            #expect(weighted.json["persisted"] == false)
            let before = harness.backends.map { $0.requests }
            _ = try await LoadDriver.run(port: harness.port, requests: 400, concurrency: 1, group: harness.group)
            let share = zip(harness.backends, before).map { $0.requests - $1 }
            #expect(share == [100, 300], "requests per backend \(share)")

            let drained = try await harness.call("PATCH", path, body: #"{"state":"draining"}"#)
            #expect(drained.status == 200)
            #expect(drained.json["state"] == "draining")
            #expect(try await harness.backendsJSON()[harness.addresses[1]]?["state"] == "draining")
            let drainedCount = harness.backends[1].requests
            let report = try await LoadDriver.run(
                port: harness.port, requests: 100, concurrency: 4, group: harness.group)
            #expect(report.succeeded == 100)
            #expect(harness.backends[1].requests == drainedCount)

            let enabled = try await harness.call("PATCH", path, body: #"{"state":"enable"}"#)
            #expect(enabled.json["state"] == "up")
            let disabled = try await harness.call("PATCH", path, body: #"{"state":"disabled","weight":1}"#)
            #expect(disabled.json["state"] == "disabled")
            #expect(disabled.json["weight"] == 1)
        }
    }
}
