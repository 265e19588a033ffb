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
    @Test("scale-out under load: a POSTed backend gets traffic and no request fails")
    func scaleOut() async throws {
        try await AdminHarness.with(backends: [DemoBehavior(), DemoBehavior()]) {
            AdminHarness.yaml($0)
        } _: {
            harness in
            let added = try await DemoBackend.start(name: "new", behavior: DemoBehavior(), group: harness.group)
            let address = "127.0.0.1:\(added.port)"
            try await withThrowingTaskGroup(of: LoadReport.self) { tasks in
                tasks.addTask {
                    try await LoadDriver.run(port: harness.port, requests: 3000, concurrency: 8, group: harness.group)
                }
                #expect(await eventually { harness.backends[0].requests >= 100 })
                let response = try await harness.call(
                    "POST", "/api/v1/pools/web/backends", body: #"{"address":"\#(address)","healthy":true}"#)
                #expect(response.status == 201, "\(response.json.serialized)")
                #expect(response.json["state"] == "up")
                #expect(
                    try await eventually {
                        (try await harness.backendsJSON()[address]?["requests"]?.intValue ?? 0) >= 50
                    })
                let report = try #require(try await tasks.next())
                #expect(report.failed == 0, "statuses \(report.statusCounts), errors \(report.errors)")
                #expect(added.requestsByPath()["/", default: 0] > 0)
            }
            try await added.stop()
        }
    }

    @Test("scale-in under load: DELETE drains, returns after its connections end, no request fails")
    func scaleIn() async throws {
        try await AdminHarness.with(backends: [DemoBehavior(), DemoBehavior(), DemoBehavior()]) {
            AdminHarness.yaml($0)
        } _: { harness in
            let victim = harness.addresses[0]
            let pool = try #require(await harness.server.pool(named: "web"))
            let backend = try #require(pool.snapshot().member(Endpoint(victim)!)?.backend)
            try await withThrowingTaskGroup(of: LoadReport.self) { tasks in
                tasks.addTask {
                    try await LoadDriver.run(port: harness.port, requests: 3000, concurrency: 8, group: harness.group)
                }
                #expect(await eventually { harness.backends[0].requests >= 100 })
                let response = try await harness.call("DELETE", "/api/v1/pools/web/backends/\(victim)?timeout=5s")
                #expect(response.status == 200, "\(response.json.serialized)")
                #expect(response.json["removed"] == .string(victim))
                #expect(response.json["persisted"] == false)
                #expect(backend.stats.active == 0)
                #expect(try await harness.backendsJSON()[victim] == nil)
                let servedAtRemoval = harness.backends[0].requestsByPath()["/", default: 0]
                let report = try #require(try await tasks.next())
                #expect(report.failed == 0, "statuses \(report.statusCounts), errors \(report.errors)")
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
