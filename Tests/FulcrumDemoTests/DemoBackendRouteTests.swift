import FulcrumDemo
import FulcrumTestSupport
import NIOCore
import NIOPosix
import Synchronization
import Testing

@Suite("DemoBackend routes", .timeLimit(.minutes(1)))
struct DemoBackendRouteTests {
    @Test func rootAnswersWithNameAndHeaderOverOneKeptAliveConnection() async throws {
        try await withBackend(name: "alpha") { backend, group in
            let client = try await DemoHTTPClient.connect(port: backend.port, group: group)
            for path in ["/", "/anything/else?q=1"] {
                let response = try await client.get(path)
                #expect(response.status == 200)
                #expect(response.bodyString == "alpha\n")
                #expect(response.header("x-backend") == "alpha")
                #expect(response.isKeepAlive)
            }
            await client.close()
            #expect(backend.requests == 2)
            #expect(backend.connectionsAccepted == 1)
            #expect(backend.requestsByPath() == ["/": 1, "/anything/else": 1])
        }
    }

    @Test func healthzFollowsSetHealthy() async throws {
        try await withBackend { backend, group in
            let client = try await DemoHTTPClient.connect(port: backend.port, group: group)
            let healthy = try await client.get("/healthz")
            #expect(healthy.status == 200)
            #expect(healthy.bodyString == "ok")

            backend.setHealthy(false)
            #expect(!backend.isHealthy)
            let unhealthy = try await client.get("/healthz")
            #expect(unhealthy.status == 503)
            #expect(unhealthy.bodyString == "unhealthy")

            backend.setHealthy(true)
            #expect(try await client.get("/healthz").status == 200)
            await client.close()
        }
    }

    @Test(arguments: [200, 201, 204, 301, 404, 429, 500, 502, 503, 599])
    func statusRouteAnswersThatStatus(code: Int) async throws {
        try await withBackend { backend, group in
            let client = try await DemoHTTPClient.connect(port: backend.port, group: group)
            let response = try await client.get("/status/\(code)")
            #expect(response.status == code)
            #expect(response.header("X-Backend") == "alpha")
            #expect(response.bodyString == (code == 204 ? "" : "status \(code)\n"))
            // The connection stays usable after any status.
            #expect(try await client.get("/").status == 200)
            await client.close()
        }
    }

    @Test(arguments: ["/status/99", "/status/600", "/status/abc", "/bytes/-1", "/slow/x"])
    func malformedParametersAreBadRequests(path: String) async throws {
        try await withBackend { backend, group in
            let response = try await DemoHTTPClient.request(port: backend.port, DemoRequest(path: path), group: group)
            #expect(response.status == 400)
        }
    }

    @Test func headersRouteListsTheRequestHeaders() async throws {
        try await withBackend { backend, group in
            let request = DemoRequest(
                path: "/headers",
                headers: [(name: "X-Forwarded-For", value: "192.0.2.7"), (name: "Via", value: "1.1 fulcrum")]
            )
            let response = try await DemoHTTPClient.request(port: backend.port, request, group: group)
            #expect(response.status == 200)
            let lines = response.bodyString.split(separator: "\n").map(String.init)
            #expect(lines.contains("X-Forwarded-For: 192.0.2.7"))
            #expect(lines.contains("Via: 1.1 fulcrum"))
            #expect(lines.contains("Host: 127.0.0.1:\(backend.port)"))
            #expect(lines.contains("Connection: close"))
        }
    }

    @Test func closeWithoutResponseClosesTheConnection() async throws {
        try await withBackend { backend, group in
            let client = try await DemoHTTPClient.connect(port: backend.port, group: group)
            await #expect(throws: DemoError.connectionClosed) {
                try await client.get("/close-without-response")
            }
            #expect(!client.isActive)
            #expect(backend.requests == 1)
        }
    }

    @Test func slowRouteWaitsAtLeastTheGivenTime() async throws {
        try await withBackend { backend, group in
            let client = try await DemoHTTPClient.connect(port: backend.port, group: group)
            let started = ContinuousClock.now
            let response = try await client.get("/slow/100")
            #expect(ContinuousClock.now - started >= .milliseconds(100))
            #expect(response.status == 200)
            #expect(response.bodyString == "alpha\n")
            await client.close()
        }
    }

    @Test func latencyDelaysRootButDoesNotBlockTheEventLoop() async throws {
        // One event loop thread and a long latency: if the delay blocked the loop, the backend could not
        // even receive the second request before the first answer. All ten arrive while none is answered.
        let latency = Duration.seconds(3)
        try await withBackend(behavior: DemoBehavior(latency: latency), threads: 1) { backend, group in
            // Counted answers, not elapsed time, tell "all ten arrived before the first answer": on a loaded
            // machine connecting ten clients may itself take a while, which says nothing about the loop.
            let answered = AnswerCount()
            let started = ContinuousClock.now
            try await withThrowingTaskGroup(of: Int.self) { tasks in
                for _ in 0..<10 {
                    tasks.addTask {
                        let status = try await DemoHTTPClient.request(
                            port: backend.port, DemoRequest(), timeout: .seconds(30), group: group
                        ).status
                        answered.value.add(1, ordering: .relaxed)
                        return status
                    }
                }
                #expect(await eventually(within: .seconds(20)) { backend.requests == 10 })
                #expect(answered.value.load(ordering: .relaxed) == 0, "all ten arrived before the first answer")
                for try await status in tasks { #expect(status == 200) }
            }
            #expect(ContinuousClock.now - started >= latency)
        }
    }

    @Test func headRequestGetsHeadersWithoutBody() async throws {
        try await withBackend { backend, group in
            let client = try await DemoHTTPClient.connect(port: backend.port, group: group)
            let response = try await client.send(DemoRequest(method: "HEAD", path: "/bytes/100"))
            #expect(response.status == 200)
            #expect(response.header("Content-Length") == "100")
            #expect(response.bodyLength == 0)
            #expect(try await client.get("/").bodyString == "alpha\n")
            await client.close()
        }
    }

    @Test func errorRateFailsAnEvenShareOfRootRequests() async throws {
        try await withBackend(behavior: DemoBehavior(errorRate: 0.25)) { backend, group in
            let report = try await LoadDriver.run(port: backend.port, requests: 8, concurrency: 1, group: group)
            #expect(report.statusCounts == [200: 6, 500: 2])
            #expect(report.succeeded == 6)
            #expect(report.failed == 2)
            #expect(report.errors == 0)
        }
    }

    @Test func connectionCountersTrackOpenAndClose() async throws {
        try await withBackend { backend, group in
            let first = try await DemoHTTPClient.connect(port: backend.port, group: group)
            let second = try await DemoHTTPClient.connect(port: backend.port, group: group)
            #expect(await eventually { backend.activeConnections == 2 })
            await first.close()
            #expect(await eventually { backend.activeConnections == 1 })
            await second.close()
            #expect(await eventually { backend.activeConnections == 0 })
            #expect(backend.connectionsAccepted == 2)
        }
    }

    @Test func stopClosesOpenConnectionsAndTheListener() async throws {
        try await withEventLoopGroup { group in
            let backend = try await DemoBackend.start(name: "alpha", group: group)
            let client = try await DemoHTTPClient.connect(port: backend.port, group: group)
            #expect(try await client.get("/").status == 200)
            try await backend.stop()
            #expect(await eventually { !client.isActive })
            await #expect(throws: (any Error).self) {
                try await DemoHTTPClient.connect(port: backend.port, timeout: .seconds(1), group: group)
            }
            try await backend.stop()
        }
    }
}

/// Responses received so far, shared with the client tasks.
private final class AnswerCount: Sendable {
    let value = Atomic<Int>(0)
}
