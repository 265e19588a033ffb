import FulcrumDemo
import FulcrumTestSupport
import Testing

@Suite("Flaky health schedule", .timeLimit(.minutes(1)))
struct FlakyScheduleTests {
    @Test(arguments: [
        (0, true), (99, true), (100, false), (149, false), (150, true), (249, true), (250, false), (1_050, true),
        (1_150, false),
    ])
    func scheduleAlternatesUpThenDown(elapsedMilliseconds: Int, healthy: Bool) {
        let schedule = FlakySchedule(up: .milliseconds(100), down: .milliseconds(50))
        #expect(schedule.isHealthy(after: .milliseconds(elapsedMilliseconds)) == healthy)
    }

    @Test func healthzFlipsWithTheSchedule() async throws {
        let behavior = DemoBehavior(flaky: FlakySchedule(up: .milliseconds(150), down: .milliseconds(150)))
        try await withBackend(behavior: behavior) { backend, group in
            let client = try await DemoHTTPClient.connect(port: backend.port, group: group)
            #expect(try await eventually { try await client.get("/healthz").status == 503 })
            #expect(try await eventually { try await client.get("/healthz").status == 200 })
            #expect(try await eventually { try await client.get("/healthz").status == 503 })
            // Only /healthz is affected.
            #expect(try await client.get("/").status == 200)
            await client.close()
        }
    }

    @Test func setHealthyFalseOverridesTheSchedule() async throws {
        let behavior = DemoBehavior(flaky: FlakySchedule(up: .seconds(3600), down: .milliseconds(1)))
        try await withBackend(behavior: behavior) { backend, group in
            #expect(backend.isHealthy)
            backend.setHealthy(false)
            let response = try await DemoHTTPClient.request(
                port: backend.port, DemoRequest(path: "/healthz"), group: group)
            #expect(response.status == 503)
        }
    }
}
