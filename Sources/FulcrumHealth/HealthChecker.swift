import FulcrumConfig
import FulcrumCore
import Logging
import NIOCore
import ServiceLifecycle

/// Active health checks of one pool (its `health_check:`), as a `Service`.
///
/// Every current member of the pool is probed every `interval`, each backend on its own schedule
/// that is re-jittered (± `jitter` × interval) every round so that probes do not line up. Results
/// go to `Pool.recordProbe`, whose rise/fall state machine decides up and down; each state change
/// is logged once at info. Membership is re-read from the pool's snapshot every round, so backends
/// added at run time get probed and removed ones stop being probed; disabled backends are skipped.
///
/// With `fall` failures needed to go down, a backend that dies is marked down within
/// `fall × interval × (1 + jitter) + timeout`; one that comes back is up after `rise` successes.
///
/// `run()` returns when its task is cancelled or graceful shutdown begins; it never throws.
public final class HealthChecker: Service {
    public let pool: Pool
    public let config: HealthCheckConfig
    private let probe: any HealthProbe
    private let logger: Logger

    /// A checker with the probe `config` asks for (TCP or HTTP) on `eventLoopGroup`.
    public convenience init(pool: Pool, config: HealthCheckConfig, eventLoopGroup: any EventLoopGroup, logger: Logger) {
        self.init(pool: pool, config: config, probe: config.makeProbe(eventLoopGroup: eventLoopGroup), logger: logger)
    }

    /// A checker with any probe; `config` gives the schedule (interval, jitter, port).
    public init(pool: Pool, config: HealthCheckConfig, probe: any HealthProbe, logger: Logger) {
        self.pool = pool
        self.config = config
        self.probe = probe
        var logger = logger
        logger[metadataKey: "pool"] = "\(pool.name)"
        self.logger = logger
    }

    public func run() async throws {
        if pool.settings.health == nil {
            logger.warning("health checks configured but the pool has no rise/fall settings; results are ignored")
        }
        logger.debug(
            "health checks starting",
            metadata: ["type": "\(config.type.rawValue)", "interval": "\(formatDuration(config.interval))"])
        await cancelWhenGracefulShutdown { await self.supervise() }
        logger.debug("health checks stopped")
    }

    // MARK: Scheduling

    private enum ChildResult: Sendable {
        /// Time to look for new members.
        case tick
        /// The backend's loop ended (it left the pool, or the task was cancelled).
        case ended(Endpoint)
    }

    /// One child per member probing on its own schedule, plus a ticker that looks for new members
    /// every interval. Ends when cancelled (every child ends then).
    private func supervise() async {
        await withTaskGroup(of: ChildResult.self) { group in
            var running = Set<Endpoint>()
            var first = true

            func spawnNewMembers() {
                for member in pool.snapshot().members where !running.contains(member.endpoint) {
                    running.insert(member.endpoint)
                    // At start, spread the first probes over one interval (as HAProxy does); a backend
                    // added later is probed promptly, since it is down until it proves itself.
                    let delay = first ? config.interval * Double.random(in: 0..<1) : .zero
                    group.addTask { await self.probeLoop(member.endpoint, firstDelay: delay) }
                }
                first = false
            }

            spawnNewMembers()
            group.addTask { await self.tick() }
            while let result = await group.next() {
                if Task.isCancelled { continue }
                switch result {
                case .tick:
                    spawnNewMembers()
                    group.addTask { await self.tick() }
                case .ended(let endpoint):
                    running.remove(endpoint)
                    // Removed and added again while the old loop was finishing its round.
                    if pool.snapshot().member(endpoint) != nil { spawnNewMembers() }
                }
            }
        }
    }

    private func tick() async -> ChildResult {
        try? await Task.sleep(for: config.interval)
        return .tick
    }

    /// Probes one backend until it leaves the pool or the task is cancelled.
    private func probeLoop(_ endpoint: Endpoint, firstDelay: Duration) async -> ChildResult {
        let clock = ContinuousClock()
        var next = clock.now + firstDelay
        while !Task.isCancelled {
            do {
                try await Task.sleep(until: next, clock: clock)
            } catch {
                break
            }
            let started = clock.now
            guard let member = pool.snapshot().member(endpoint) else { break }
            if member.admin != .disabled {
                let target = Endpoint(address: endpoint.address, port: config.port ?? endpoint.port)
                let outcome = await probe.check(target)
                // A probe cut short by shutdown says nothing about the backend.
                if Task.isCancelled { break }
                record(endpoint, outcome)
            }
            // Counted from this probe's start, so a slow probe does not stretch the period, and from
            // when it really started, so a late wake-up is not followed by a probe in quick succession.
            next = max(started + jittered(config.interval), clock.now)
        }
        return .ended(endpoint)
    }

    /// `interval` ± `jitter` × interval, drawn anew each call.
    private func jittered(_ interval: Duration) -> Duration {
        let spread = min(max(config.jitter, 0), 0.5)
        guard spread > 0 else { return interval }
        return interval * Double.random(in: (1 - spread)...(1 + spread))
    }

    // MARK: Results

    private func record(_ endpoint: Endpoint, _ outcome: ProbeOutcome) {
        let now = NIODeadline.now().uptimeNanoseconds
        // State changes reach the logs (and metrics) through the pool's observers, once.
        pool.recordProbe(endpoint, success: outcome.success, detail: outcome.detail, now: now)
        logger.debug(
            "probe \(outcome.success ? "passed" : "failed"): \(outcome.detail)",
            metadata: ["backend.address": "\(endpoint)"])
    }
}
