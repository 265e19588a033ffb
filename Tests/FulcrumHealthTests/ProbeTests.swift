import FulcrumConfig
import FulcrumCore
import FulcrumHealth
import FulcrumTestSupport
import NIOCore
import NIOPosix
import Testing

@Suite("Probes")
struct ProbeTests {
    @Test func tcpProbePassesAgainstAListenerAndIsRefusedOnceItCloses() async throws {
        try await withEventLoopGroup { group in
            let server = try await TestServer.start(group: group, mode: .silent)
            let probe = TCPProbe(eventLoopGroup: group, timeout: .seconds(1))

            #expect(await probe.check(server.endpoint) == .passed("ok"))
            // The probe closes what it opened.
            #expect(await eventually(within: .seconds(2)) { server.connections.closed == 1 })

            await server.stop()
            #expect(await probe.check(server.endpoint) == .failed("connect refused"))
        }
    }

    @Test func httpProbeSendsAFullRequestAndPassesOnAnExpectedStatus() async throws {
        try await withEventLoopGroup { group in
            let server = try await TestServer.start(group: group, mode: .http(status: 204, body: ""))
            let probe = HTTPProbe(eventLoopGroup: group, timeout: .seconds(1), path: "/healthz?deep=1")

            #expect(await probe.check(server.endpoint) == .passed("status 204"))
            let request = try #require(server.connections.requests.first)
            let lines = request.split(separator: "\r\n").map(String.init)
            #expect(lines.first == "GET /healthz?deep=1 HTTP/1.1")
            #expect(lines.contains("Host: 127.0.0.1:\(server.port)"))
            #expect(lines.contains("User-Agent: fulcrum-health"))
            #expect(lines.contains("Connection: close"))
            await server.stop()
        }
    }

    @Test func httpProbeUsesTheConfiguredHostHeader() async throws {
        try await withEventLoopGroup { group in
            let server = try await TestServer.start(group: group, mode: .http(status: 200, body: "ok"))
            let probe = HTTPProbe(eventLoopGroup: group, timeout: .seconds(1), host: "app.example")

            #expect(await probe.check(server.endpoint).success)
            #expect(server.connections.requests.first?.contains("\r\nHost: app.example\r\n") == true)
            await server.stop()
        }
    }

    @Test(arguments: [(503, 200...399, false), (404, 200...399, false), (301, 200...399, true), (503, 500...503, true)])
    func httpProbeJudgesTheStatus(status: Int, expect: ClosedRange<Int>, passes: Bool) async throws {
        try await withEventLoopGroup { group in
            let server = try await TestServer.start(group: group, mode: .http(status: status, body: "ok"))
            let probe = HTTPProbe(eventLoopGroup: group, timeout: .seconds(1), expectStatus: expect)

            #expect(await probe.check(server.endpoint) == ProbeOutcome(success: passes, detail: "status \(status)"))
            await server.stop()
        }
    }

    @Test func httpProbeLooksForTheExpectedBody() async throws {
        try await withEventLoopGroup { group in
            let healthy = try await TestServer.start(group: group, mode: .http(status: 200, body: "{\"db\":\"ok\"}"))
            let sick = try await TestServer.start(group: group, mode: .http(status: 200, body: "{\"db\":\"down\"}"))
            let probe = HTTPProbe(eventLoopGroup: group, timeout: .seconds(1), expectBody: "\"db\":\"ok\"")

            #expect(await probe.check(healthy.endpoint) == .passed("status 200"))
            #expect(await probe.check(sick.endpoint) == .failed("body lacks '\"db\":\"ok\"'"))
            // A body check still needs a good status first.
            let failing = try await TestServer.start(group: group, mode: .http(status: 500, body: "\"db\":\"ok\""))
            #expect(await probe.check(failing.endpoint) == .failed("status 500"))
            for server in [healthy, sick, failing] { await server.stop() }
        }
    }

    @Test func httpProbeReadsAtMost64KiBOfBody() async throws {
        try await withEventLoopGroup { group in
            let early = String(repeating: "x", count: 60_000) + "marker" + String(repeating: "y", count: 60_000)
            let late = String(repeating: "x", count: HTTPProbe.maxBodyBytes) + "marker"
            let earlyServer = try await TestServer.start(group: group, mode: .http(status: 200, body: early))
            let lateServer = try await TestServer.start(group: group, mode: .http(status: 200, body: late))
            let probe = HTTPProbe(eventLoopGroup: group, timeout: .seconds(2), expectBody: "marker")

            #expect(await probe.check(earlyServer.endpoint) == .passed("status 200"))
            #expect(await probe.check(lateServer.endpoint) == .failed("body lacks 'marker' (in its first 64 KiB)"))
            await earlyServer.stop()
            await lateServer.stop()
        }
    }

    @Test func httpProbeTimesOutAgainstAServerThatNeverAnswersAndClosesItsConnection() async throws {
        try await withEventLoopGroup { group in
            let server = try await TestServer.start(group: group, mode: .silent)
            let probe = HTTPProbe(eventLoopGroup: group, timeout: .milliseconds(200))

            let clock = ContinuousClock()
            let started = clock.now
            let outcome = await probe.check(server.endpoint)
            let elapsed = clock.now - started

            #expect(outcome == .failed("timed out after 200ms"))
            #expect(elapsed >= .milliseconds(190))
            #expect(elapsed < .milliseconds(200) + .seconds(2))
            #expect(server.connections.requests.count == 1)
            #expect(await eventually(within: .seconds(2)) { server.connections.closed == 1 })
            await server.stop()
        }
    }

    @Test func httpProbeFailsWhenTheServerClosesWithoutAnswering() async throws {
        try await withEventLoopGroup { group in
            let server = try await TestServer.start(group: group, mode: .silent)
            let probe = HTTPProbe(eventLoopGroup: group, timeout: .seconds(5))

            // Close the server side as soon as the request arrived.
            async let outcome = probe.check(server.endpoint)
            #expect(await eventually(within: .seconds(2)) { server.connections.requests.count == 1 })
            for channel in server.connections.takeOpen() { try? await channel.close() }

            let result = await outcome
            #expect(!result.success)
            #expect(!result.detail.contains("timed out"))
            await server.stop()
        }
    }

    @Test func httpProbeAgainstAClosedPortIsRefused() async throws {
        try await withEventLoopGroup { group in
            let server = try await TestServer.start(group: group, mode: .silent)
            await server.stop()
            let probe = HTTPProbe(eventLoopGroup: group, timeout: .seconds(1))
            #expect(await probe.check(server.endpoint) == .failed("connect refused"))
        }
    }

    @Test func aCancelledProbeReturnsAtOnce() async throws {
        try await withEventLoopGroup { group in
            let server = try await TestServer.start(group: group, mode: .silent)
            let probe = HTTPProbe(eventLoopGroup: group, timeout: .seconds(30))
            let clock = ContinuousClock()

            let elapsed = await withTaskGroup(of: Duration.self) { tasks in
                tasks.addTask {
                    let started = clock.now
                    _ = await probe.check(server.endpoint)
                    return clock.now - started
                }
                _ = await eventually(within: .seconds(2)) { server.connections.requests.count == 1 }
                tasks.cancelAll()
                return await tasks.next()!
            }
            #expect(elapsed < .seconds(3))
            #expect(await eventually(within: .seconds(2)) { server.connections.closed == 1 })
            await server.stop()
        }
    }
}
