import FulcrumConfig
import FulcrumCore
import FulcrumDemo
import NIOCore
import NIOPosix
import Testing

@testable import FulcrumProxy

@Suite("HTTP proxy: backend failures, retries, timeouts")
struct HTTPResilienceTests {
    @Test func postToABackendThatClosesGets502AndIsNotRetried() async throws {
        try await HTTPProxyHarness.with(backends: 2) { proxy in
            let client = try await proxy.client()
            let response = try await client.send(
                DemoRequest(method: "POST", path: "/close-without-response", body: ByteBuffer(string: "payload")))
            #expect(response.status == 502)
            #expect(response.bodyString == "backend closed the connection\n")
            #expect(proxy.totalRequests == 1)
            await client.close()
        }
    }

    @Test func getIsRetriedOnAHealthyBackendWhenOneClosesWithoutAnswer() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let closer = try await HTTPScriptedBackend.start(reply: nil, group: group)
        do {
            try await HTTPProxyHarness.with(backends: 1, extra: [closer.endpoint], retries: 1) { proxy in
                let client = try await proxy.client()
                for _ in 0..<10 {
                    let response = try await client.get("/")
                    #expect(response.status == 200)
                    #expect(response.header("X-Backend") == "b0")
                }
                await client.close()
                #expect(closer.requestCount >= 4, "round robin should have sent about half to the closer")
            }
        } catch {
            await closer.stop()
            try? await group.shutdownGracefully()
            throw error
        }
        await closer.stop()
        try await group.shutdownGracefully()
    }

    @Test(arguments: [
        "SPDY/9 what\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        "HTTP/1.1 200 OK\r\nContent-Length: -4\r\n\r\nabcd", "HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
    ])
    func invalidResponseGets502(reply: String) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let garbage = try await HTTPScriptedBackend.start(reply: reply, group: group)
        try await HTTPProxyHarness.with(backends: 0, extra: [garbage.endpoint], retries: 0) { proxy in
            let client = try await proxy.client()
            let response = try await client.get("/")
            #expect(response.status == 502)
            #expect(response.bodyString == "invalid response from backend\n")
            // The client connection survives: the framing towards it was never lost.
            let again = try await client.get("/")
            #expect(again.status == 502)
            await client.close()
        }
        await garbage.stop()
        try await group.shutdownGracefully()
    }

    @Test func refusedConnectsAreRetriedThenGet502() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let dead = [try await httpRefusedEndpoint(group: group), try await httpRefusedEndpoint(group: group)]
        try await group.shutdownGracefully()
        try await HTTPProxyHarness.with(backends: 1, extra: dead, retries: 2) { proxy in
            let client = try await proxy.client()
            for _ in 0..<9 {
                #expect(try await client.get("/").status == 200)
            }
            await client.close()
        }
        try await HTTPProxyHarness.with(backends: 0, extra: dead, retries: 2) { proxy in
            let client = try await proxy.client()
            let response = try await client.get("/")
            #expect(response.status == 502)
            #expect(response.bodyString == "connect to backend failed\n")
            await client.close()
        }
    }

    @Test func allBackendsDownGets503() async throws {
        try await HTTPProxyHarness.with(backends: 2) { proxy in
            for backend in proxy.backends {
                let endpoint = Endpoint(address: .v4(0x7F00_0001), port: UInt16(backend.port))
                try proxy.pool.setAdmin(endpoint, to: .disabled, now: MonotonicClock.now())
            }
            let client = try await proxy.client()
            let response = try await client.get("/")
            #expect(response.status == 503)
            #expect(response.bodyString == "no backend available\n")
            #expect(response.header("Content-Type") == "text/plain; charset=utf-8")
            #expect(proxy.totalRequests == 0)
            await client.close()
        }
    }

    @Test func slowBackendGets504() async throws {
        var timeouts = ListenerTimeouts()
        timeouts.response = .milliseconds(200)
        try await HTTPProxyHarness.with(backends: 1, timeouts: timeouts) { proxy in
            let client = try await proxy.client()
            let started = ContinuousClock.now
            let response = try await client.get("/slow/3000")
            #expect(response.status == 504)
            #expect(response.bodyString == "backend timed out\n")
            #expect(ContinuousClock.now - started < .seconds(2))
            let fast = try await client.get("/slow/10")
            #expect(fast.status == 200)
            await client.close()
        }
    }

    @Test func killingABackendMidLoadFailsNoGet() async throws {
        try await HTTPProxyHarness.with(backends: 3, retries: 2) { proxy in
            let port = proxy.port
            let group = proxy.group
            let load = Task {
                try await LoadDriver.run(port: port, path: "/", requests: 3000, concurrency: 16, group: group)
            }
            try await httpWaitUntil(10) { proxy.totalRequests >= 500 }
            try await proxy.backends[1].stop()
            let report = try await load.value
            #expect(report.failed == 0, "\(report)")
            #expect(report.errors == 0)
            #expect(report.statusCounts == [200: 3000])
            #expect((report.byBackend["b1"] ?? 0) < 3000 / 3 + 100)
        }
    }

    @Test func staleKeepAliveConnectionsAreRetriedTransparently() async throws {
        // A backend that answers with keep-alive and then closes anyway: every pooled connection goes stale.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let rude = try await HTTPScriptedBackend.start(
            reply: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Backend: rude\r\n\r\nok", group: group)
        try await HTTPProxyHarness.with(backends: 0, extra: [rude.endpoint], retries: 0) { proxy in
            let client = try await proxy.client()
            for _ in 0..<20 {
                let response = try await client.get("/")
                #expect(response.status == 200)
            }
            await client.close()
        }
        await rude.stop()
        try await group.shutdownGracefully()
    }
}
