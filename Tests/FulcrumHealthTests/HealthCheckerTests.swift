import FulcrumConfig
import FulcrumCore
import FulcrumHealth
import FulcrumTestSupport
import Logging
import NIOCore
import NIOPosix
import Synchronization
import Testing

@Suite("HealthChecker")
struct HealthCheckerTests {
    static let interval = Duration.milliseconds(50)
    static let timeout = Duration.milliseconds(40)
    static let jitter = 0.1
    /// Allowance for scheduling on a loaded CI machine; every wait still has a deadline.
    // Generous: these bounds must hold while other suites load both cores (swift test runs suites in parallel).
    static let slack = Duration.milliseconds(2500)

    @Test func aBackendThatDiesGoesDownWithinFallIntervalsAndComesBackAfterRiseSuccesses() async throws {
        try await withEventLoopGroup { group in
            var server = try await TestServer.start(group: group, mode: .silent)
            let backend = server.endpoint
            let check = Self.check(.tcp, rise: 2, fall: 3)
            let pool = try Self.makePool([backend], check: check, slowStart: .seconds(60))
            let seen = EventLog()
            pool.addObserver { _, events in seen.append(events) }
            let checker = HealthChecker(
                pool: pool, config: check, eventLoopGroup: group, logger: Logger(label: "test"))
            let clock = ContinuousClock()

            try await Self.whileChecking(checker) {
                #expect(await eventually(within: Self.slack) { server.connections.accepted >= 2 })
                #expect(Self.state(pool, backend) == .up)

                // Two stamps per transition: a probe can fail (or pass) while `stop()` (or `start`) has not yet
                // returned to this task, which on a loaded machine can take longer than a probe period. The lower
                // bound (nothing flips early) is measured from before the change, so it cannot count time the
                // backend was still reachable as time it was not; the upper bound from after it, when the change
                // has certainly happened.
                let dying = clock.now
                await server.stop()
                let died = clock.now
                let downBound = Self.interval * (Double(check.fall) * (1 + Self.jitter)) + Self.timeout
                #expect(await eventually(within: downBound + Self.slack) { Self.state(pool, backend) == .down })
                let wentDown = clock.now
                #expect(wentDown - died <= downBound + Self.slack)
                // One failure never flips the state: fall failures need (fall - 1) full periods at least.
                #expect(
                    wentDown - dying >= Self.interval * (Double(check.fall - 1) * (1 - Self.jitter)) - .milliseconds(10)
                )
                #expect(pool.snapshot().member(backend)?.lastProbe?.detail == "connect refused")

                let returning = clock.now
                server = try await TestServer.start(group: group, port: Int(backend.port), mode: .silent)
                let returned = clock.now
                let upBound = Self.interval * (Double(check.rise) * (1 + Self.jitter)) + Self.timeout
                #expect(await eventually(within: upBound + Self.slack) { Self.state(pool, backend) == .up })
                let cameUp = clock.now
                #expect(cameUp - returned <= upBound + Self.slack)
                #expect(
                    cameUp - returning >= Self.interval * (Double(check.rise - 1) * (1 - Self.jitter))
                        - .milliseconds(10))
                // Slow start takes over from here: the backend ramps up from a low weight.
                let member = try #require(pool.snapshot().member(backend))
                #expect(member.effectiveWeight < member.weight * WeightScale.factor)
            }
            await server.stop()

            // Each state change is published once, for logs and metrics to observe.
            #expect(
                seen.events == [
                    .healthChanged(backend, healthy: false, detail: "connect refused"),
                    .healthChanged(backend, healthy: true, detail: "ok"),
                ])
        }
    }

    @Test func anHTTPBackendAnsweringOutsideTheExpectedStatusGoesDown() async throws {
        try await withEventLoopGroup { group in
            let server = try await TestServer.start(group: group, mode: .http(status: 503, body: "busy"))
            let check = Self.check(.http, rise: 2, fall: 2)
            let pool = try Self.makePool([server.endpoint], check: check)
            let checker = HealthChecker(pool: pool, config: check, eventLoopGroup: group, logger: Self.quiet)

            try await Self.whileChecking(checker) {
                let bound = Self.interval * (Double(check.fall) * (1 + Self.jitter)) + Self.timeout
                #expect(await eventually(within: bound + Self.slack) { Self.state(pool, server.endpoint) == .down })
                #expect(pool.snapshot().member(server.endpoint)?.lastProbe?.detail == "status 503")
            }
            await server.stop()
        }
    }

    @Test func aBackendAddedAtRunTimeStartsDownAndComesUpAfterRiseGoodProbes() async throws {
        try await withEventLoopGroup { group in
            let first = try await TestServer.start(group: group, mode: .silent)
            let added = try await TestServer.start(group: group, mode: .silent)
            let check = Self.check(.tcp, rise: 3, fall: 3)
            let pool = try Self.makePool([first.endpoint], check: check)
            let checker = HealthChecker(pool: pool, config: check, eventLoopGroup: group, logger: Self.quiet)

            try await Self.whileChecking(checker) {
                #expect(await eventually(within: Self.slack) { first.connections.accepted >= 1 })
                try pool.add(BackendSpec(endpoint: added.endpoint), now: nowNanos())
                #expect(Self.state(pool, added.endpoint) == .down)

                // Found at the next membership look (≤ one interval), then rise good probes.
                let bound = Self.interval * (1 + Double(check.rise) * (1 + Self.jitter)) + Self.timeout
                #expect(await eventually(within: bound + Self.slack) { Self.state(pool, added.endpoint) == .up })
                // A TCP probe passes when its connect completes, which can be before the server's event loop has
                // run its accept (seen under load: up with 1 accepted of 2), so the count may lag a little.
                #expect(await eventually(within: Self.slack) { added.connections.accepted >= check.rise })
            }
            await first.stop()
            await added.stop()
        }
    }

    @Test func removedBackendsStopBeingProbedDisabledOnesAreSkippedAndDrainingOnesAreStillChecked() async throws {
        let endpoints = (1...4).map { Endpoint(address: .v4(0x0A00_0000 + UInt32($0)), port: 80) }
        let (removed, disabled, draining, plain) = (endpoints[0], endpoints[1], endpoints[2], endpoints[3])
        let check = Self.check(.tcp, rise: 2, fall: 3)
        let pool = try Self.makePool(endpoints, check: check)
        let probe = RecordingProbe()
        let checker = HealthChecker(pool: pool, config: check, probe: probe, logger: Self.quiet)

        try await Self.whileChecking(checker) {
            #expect(await eventually(within: Self.slack) { endpoints.allSatisfy { probe.count($0) >= 2 } })
            try pool.remove(removed, now: nowNanos())
            try pool.setAdmin(disabled, to: .disabled, now: nowNanos())
            try pool.setAdmin(draining, to: .draining, now: nowNanos())
            let before = Dictionary(uniqueKeysWithValues: endpoints.map { ($0, probe.count($0)) })

            #expect(
                await eventually(within: Self.interval * 6 + Self.slack) {
                    probe.count(plain) >= before[plain]! + 5 && probe.count(draining) >= before[draining]! + 5
                })
            // At most the probe that was already under way when the change landed.
            #expect(probe.count(removed) <= before[removed]! + 1)
            #expect(probe.count(disabled) <= before[disabled]! + 1)
        }
    }

    @Test func thePortOverrideIsProbedInsteadOfTheBackendPort() async throws {
        try await withEventLoopGroup { group in
            let healthPort = try await TestServer.start(group: group, mode: .silent)
            let closed = try await TestServer.start(group: group, mode: .silent)
            await closed.stop()
            let check = Self.check(.tcp, rise: 2, fall: 1, port: UInt16(healthPort.port))
            let pool = try Self.makePool([], check: check)
            let checker = HealthChecker(pool: pool, config: check, eventLoopGroup: group, logger: Self.quiet)

            try await Self.whileChecking(checker) {
                // Added at run time, so it starts down: only probes of the health port can bring it up.
                try pool.add(BackendSpec(endpoint: closed.endpoint), now: nowNanos())
                let bound = Self.interval * (1 + Double(check.rise) * (1 + Self.jitter)) + Self.timeout
                #expect(await eventually(within: bound + Self.slack) { Self.state(pool, closed.endpoint) == .up })
                #expect(pool.snapshot().member(closed.endpoint)?.lastProbe?.detail == "ok")
                // Accepts may lag the probes' completed connects (see above); nothing else connects to this port.
                #expect(await eventually(within: Self.slack) { healthPort.connections.accepted >= check.rise })
            }
            await healthPort.stop()
        }
    }

    @Test func theCheckerStopsPromptlyWhenCancelledEvenWithAProbeUnderWay() async throws {
        try await withEventLoopGroup { group in
            let hung = try await TestServer.start(group: group, mode: .silent)
            let check = HealthCheckConfig(type: .http, interval: .seconds(1), timeout: .seconds(1), jitter: 0)
            let pool = try Self.makePool([hung.endpoint], check: check)
            let checker = HealthChecker(pool: pool, config: check, eventLoopGroup: group, logger: Self.quiet)
            let clock = ContinuousClock()

            let stoppedAfter = try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await checker.run() }
                // The first probe starts within one interval and then hangs for up to the timeout.
                #expect(await eventually(within: .seconds(1) + Self.slack) { hung.connections.requests.count == 1 })
                tasks.cancelAll()
                let cancelled = clock.now
                try await tasks.waitForAll()
                return clock.now - cancelled
            }
            #expect(stoppedAfter < .milliseconds(300) + Self.slack)
            // The interrupted probe says nothing about the backend, so it is not recorded.
            #expect(pool.snapshot().member(hung.endpoint)?.lastProbe == nil)
            #expect(await eventually(within: Self.slack) { hung.connections.closed == 1 })
            await hung.stop()
        }
    }

    // MARK: Helpers

    static let quiet = Logger(label: "fulcrum.health.test") { _ in SwiftLogNoOpLogHandler() }

    static func check(
        _ type: HealthCheckConfig.CheckType, rise: Int, fall: Int, port: UInt16? = nil
    ) -> HealthCheckConfig {
        HealthCheckConfig(
            type: type, interval: interval, timeout: timeout, rise: rise, fall: fall, port: port, jitter: jitter)
    }

    static func makePool(_ endpoints: [Endpoint], check: HealthCheckConfig, slowStart: Duration? = nil) throws -> Pool {
        let slowStartNanos = slowStart.map { UInt64($0.components.seconds) * 1_000_000_000 } ?? 0
        return try Pool(
            name: "web",
            settings: PoolSettings(
                health: HealthSettings(rise: check.rise, fall: check.fall), slowStartNanos: slowStartNanos),
            backends: endpoints.map { BackendSpec(endpoint: $0) }, now: nowNanos())
    }

    /// Runs the checker while `body` runs, then cancels it and waits for it to end.
    static func whileChecking<T: Sendable>(_ checker: HealthChecker, _ body: () async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await checker.run() }
            let result = try await body()
            tasks.cancelAll()
            try await tasks.waitForAll()
            return result
        }
    }

    static func state(_ pool: Pool, _ endpoint: Endpoint) -> BackendState? {
        pool.snapshot().member(endpoint)?.state
    }
}

/// Passes every check and counts them per target.
final class RecordingProbe: HealthProbe {
    private let counts = Mutex<[Endpoint: Int]>([:])

    func check(_ target: Endpoint) async -> ProbeOutcome {
        counts.withLock { $0[target, default: 0] += 1 }
        return .passed()
    }

    func count(_ endpoint: Endpoint) -> Int {
        counts.withLock { $0[endpoint, default: 0] }
    }
}

/// Collects the events a pool publishes.
final class EventLog: Sendable {
    private let recorded = Mutex<[PoolEvent]>([])
    func append(_ events: [PoolEvent]) { recorded.withLock { $0 += events } }
    var events: [PoolEvent] { recorded.withLock { $0 } }
}
