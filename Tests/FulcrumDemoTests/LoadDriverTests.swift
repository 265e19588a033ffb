import FulcrumDemo
import FulcrumTestSupport
import NIOCore
import NIOPosix
import Testing

@Suite("LoadDriver", .timeLimit(.minutes(1)))
struct LoadDriverTests {
    @Test func countsResponsesPerBackend() async throws {
        try await withEventLoopGroup { group in
            let alpha = try await DemoBackend.start(name: "alpha", group: group)
            let beta = try await DemoBackend.start(name: "beta", group: group)
            async let alphaRun = LoadDriver.run(port: alpha.port, requests: 30, concurrency: 3, group: group)
            async let betaRun = LoadDriver.run(port: beta.port, requests: 21, concurrency: 2, group: group)
            let (alphaReport, betaReport) = try await (alphaRun, betaRun)

            #expect(alphaReport.byBackend == ["alpha": 30])
            #expect(alphaReport.succeeded == 30)
            #expect(alphaReport.statusCounts == [200: 30])
            #expect(alphaReport.failed == 0 && alphaReport.errors == 0)
            #expect(betaReport.byBackend == ["beta": 21])
            // Keep-alive: one connection per unit of concurrency.
            #expect(alpha.connectionsAccepted == 3)
            #expect(beta.connectionsAccepted == 2)
            #expect(alpha.requests == 30 && beta.requests == 21)
            #expect(alphaReport.p50 > .zero && alphaReport.p50 <= alphaReport.p99)
            #expect(alphaReport.p99 <= alphaReport.max)
            try await alpha.stop()
            try await beta.stop()
        }
    }

    @Test func withoutKeepAliveEveryRequestOpensAConnection() async throws {
        try await withBackend { backend, group in
            let report = try await LoadDriver.run(
                port: backend.port,
                requests: 12,
                concurrency: 4,
                keepAlive: false,
                group: group
            )
            #expect(report.succeeded == 12)
            #expect(backend.connectionsAccepted == 12)
        }
    }

    @Test func countsNon2xxSeparatelyFromErrors() async throws {
        try await withBackend { backend, group in
            let report = try await LoadDriver.run(
                port: backend.port,
                path: "/status/503",
                requests: 5,
                concurrency: 2,
                group: group
            )
            #expect(report.succeeded == 0)
            #expect(report.failed == 5)
            #expect(report.non2xx == 5)
            #expect(report.statusCounts == [503: 5])
            #expect(report.errors == 0)
            #expect(report.byBackend == ["alpha": 5])
        }
    }

    @Test func closedConnectionsCountAsErrorsAndAreReplaced() async throws {
        try await withBackend { backend, group in
            let report = try await LoadDriver.run(
                port: backend.port,
                path: "/close-without-response",
                requests: 6,
                concurrency: 2,
                group: group
            )
            #expect(report.errors == 6)
            #expect(report.failed == 6)
            #expect(backend.connectionsAccepted == 6)
        }
    }

    @Test func requestsThatNeverAnswerTimeOut() async throws {
        try await withBackend { backend, group in
            let started = ContinuousClock.now
            let report = try await LoadDriver.run(
                port: backend.port,
                path: "/slow/60000",
                requests: 3,
                concurrency: 1,
                timeout: .milliseconds(200),
                group: group
            )
            #expect(report.errors == 3)
            #expect(ContinuousClock.now - started < .seconds(10))
        }
    }

    @Test func nothingListeningMeansEveryRequestIsAnError() async throws {
        try await withEventLoopGroup { group in
            let backend = try await DemoBackend.start(name: "gone", group: group)
            let port = backend.port
            try await backend.stop()
            let report = try await LoadDriver.run(port: port, requests: 10, concurrency: 3, group: group)
            #expect(report.errors == 10)
            #expect(report.succeeded == 0)
            #expect(report.statusCounts.isEmpty)
        }
    }

    @Test func backendStoppedMidRunCountsErrorsAndTheRunEnds() async throws {
        try await withEventLoopGroup { group in
            let backend = try await DemoBackend.start(
                name: "alpha",
                behavior: DemoBehavior(latency: .milliseconds(2)),
                group: group
            )
            let total = 1_000
            async let run = LoadDriver.run(
                port: backend.port,
                requests: total,
                concurrency: 4,
                timeout: .seconds(2),
                group: group
            )
            #expect(await eventually { backend.requests >= 50 })
            try await backend.stop()
            let report = try await run

            // Requests are counted on arrival, so up to one per connection was in flight when the backend died.
            #expect(report.succeeded >= 50 - 4)
            #expect(report.errors > 0)
            #expect(report.succeeded + report.non2xx + report.errors == total)
            #expect(report.byBackend["alpha"] == report.succeeded)
        }
    }

    @Test func zeroRequestsIsAnEmptyReport() async throws {
        try await withEventLoopGroup { group in
            let report = try await LoadDriver.run(port: 9, requests: 0, concurrency: 4, group: group)
            #expect(report == LoadReport(elapsed: report.elapsed))
        }
    }
}
