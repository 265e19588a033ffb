import Testing

@testable import FulcrumCore

@Suite("Pools, health, outliers, slow start")
struct PoolTests {
    @Test("draining, disabled and down backends are never picked", arguments: AlgorithmKind.allCases)
    func unavailableNeverPicked(kind: AlgorithmKind) throws {
        let pool = try makePool(kind, weights: [1, 1, 1, 1], health: HealthSettings(rise: 1, fall: 1))
        let all = endpoints(4)
        try pool.setAdmin(all[0], to: .draining, now: 2)
        try pool.setAdmin(all[1], to: .disabled, now: 2)
        pool.recordProbe(all[2], success: false, now: 2)
        let snapshot = pool.snapshot()
        #expect(snapshot.members.map(\.state) == [.draining, .disabled, .down, .up])
        let counts = distribution(snapshot, picks: 2_000)
        #expect(counts.keys.sorted() == [all[3]])
        #expect(snapshot.pick(PickKey(hash: 1), excluding: [snapshot.candidates[0].backend]) == nil)
    }

    @Test("backups serve only when no primary is up", arguments: AlgorithmKind.allCases)
    func backupFallback(kind: AlgorithmKind) throws {
        let pool = try makePool(kind, weights: [1, 1, 1], backups: [2], health: HealthSettings(rise: 1, fall: 1))
        let all = endpoints(3)
        #expect(Set(distribution(pool.snapshot(), picks: 1_000).keys) == [all[0], all[1]])
        pool.recordProbe(all[0], success: false, now: 2)
        let events = pool.recordProbe(all[1], success: false, now: 2)
        #expect(events.contains(.usingBackups(true)))
        let snapshot = pool.snapshot()
        #expect(snapshot.usingBackups)
        #expect(Set(distribution(snapshot, picks: 1_000).keys) == [all[2]])
        // A primary returning takes over again.
        #expect(pool.recordProbe(all[1], success: true, now: 3).contains(.usingBackups(false)))
        #expect(Set(distribution(pool.snapshot(), picks: 1_000).keys) == [all[1]])
    }

    @Test("no backend available is a clear result, never a trap", arguments: AlgorithmKind.allCases)
    func emptyPool(kind: AlgorithmKind) throws {
        let pool = try makePool(kind, weights: [])
        #expect(pool.snapshot().pick(PickKey(hash: 7)) == nil)
        #expect(throws: NoBackendAvailable(pool: "test")) { try pool.snapshot().select(PickKey()) }
        try pool.add(BackendSpec(endpoint: endpoints(1)[0]), now: 2)
        #expect(pool.snapshot().pick(PickKey(hash: 7))?.endpoint == endpoints(1)[0])
    }

    @Test("rise/fall: one contrary result never flips the state")
    func riseFall() {
        let settings = HealthSettings(rise: 2, fall: 3)
        var tracker = HealthTracker(healthy: true, now: 0)
        func record(_ success: Bool, _ at: UInt64) -> Bool {
            tracker.record(success: success, settings: settings, at: at)
        }
        #expect(!record(false, 1))
        #expect(!record(false, 2))
        #expect(!record(true, 3))  // streak reset
        #expect(!record(false, 4))
        #expect(!record(false, 5))
        #expect(record(false, 6))
        #expect(!tracker.isHealthy && tracker.since == 6)
        #expect(!record(true, 7))
        #expect(record(true, 8))
        #expect(tracker.isHealthy && tracker.lastResult == ProbeResult(success: true, at: 8, detail: ""))
    }

    @Test("a backend added at run time is checked before it gets traffic unless told otherwise")
    func runtimeAddWaitsForChecks() throws {
        let pool = try makePool(.roundRobin, weights: [1], health: HealthSettings(rise: 2, fall: 2))
        let newcomer = Endpoint("10.9.9.9:80")!
        let events = try pool.add(BackendSpec(endpoint: newcomer), now: 5)
        #expect(events == [.added(newcomer)])
        #expect(pool.snapshot().member(newcomer)?.state == .down)
        pool.recordProbe(newcomer, success: true, detail: "status 200", now: 6)
        #expect(pool.snapshot().member(newcomer)?.state == .down)
        // Every probe is visible at once, even one that changes no state.
        #expect(pool.snapshot().member(newcomer)?.lastProbe == ProbeResult(success: true, at: 6, detail: "status 200"))
        #expect(
            pool.recordProbe(newcomer, success: true, now: 7) == [.healthChanged(newcomer, healthy: true, detail: "")])
        #expect(pool.snapshot().candidates.count == 2)
        let trusted = Endpoint("10.9.9.10:80")!
        try pool.add(BackendSpec(endpoint: trusted), healthy: true, now: 8)
        #expect(pool.snapshot().member(trusted)?.state == .up)
        #expect(throws: PoolError.duplicateBackend(trusted)) { try pool.add(BackendSpec(endpoint: trusted), now: 9) }
        #expect(throws: PoolError.invalidWeight(0)) { try pool.setWeight(trusted, to: 0, now: 9) }
        #expect(throws: PoolError.unknownBackend(Endpoint("10.1.1.1:1")!)) {
            try pool.remove(Endpoint("10.1.1.1:1")!, now: 9)
        }
    }

    @Test("outlier ejection: grows with repeats, is capped, and respects the pool share")
    func outlierEjection() throws {
        let second: UInt64 = 1_000_000_000
        let outlier = OutlierSettings(
            consecutiveFailures: 3, baseEjectionNanos: 10 * second, maxEjectionNanos: 25 * second,
            maxEjectionPercent: 50)
        let pool = try makePool(.roundRobin, weights: [1, 1, 1, 1], outlier: outlier)
        let backends = pool.snapshot().candidates.map(\.backend)
        let victim = backends[0]
        #expect(pool.reportOutcome(victim, success: false, now: 1).isEmpty)
        #expect(pool.reportOutcome(victim, success: false, now: 1).isEmpty)
        #expect(
            pool.reportOutcome(victim, success: false, now: 1) == [.ejected(victim.endpoint, forNanos: 10 * second)])
        #expect(pool.snapshot().member(victim.endpoint)?.state == .ejected)
        #expect(!pool.snapshot().candidates.contains { $0.backend === victim })
        // Back after its time.
        #expect(pool.tick(now: 1 + 10 * second) == [.returned(victim.endpoint)])
        #expect(pool.snapshot().member(victim.endpoint)?.state == .up)
        // Ejected again soon: twice as long; a third time: capped at 25 s.
        let t2 = 2 + 10 * second
        for _ in 0..<3 { pool.reportOutcome(victim, success: false, now: t2) }
        #expect(pool.snapshot().member(victim.endpoint)?.ejectedUntil == t2 + 20 * second)
        pool.tick(now: t2 + 20 * second)
        let t3 = t2 + 20 * second + 1
        for _ in 0..<3 { pool.reportOutcome(victim, success: false, now: t3) }
        #expect(pool.snapshot().member(victim.endpoint)?.ejectedUntil == t3 + 25 * second)
        // A success in between resets the streak; failed requests count like failed connections.
        for success in [false, false, true, false] {
            backends[1].requestStarted()
            #expect(pool.requestFinished(backends[1], success: success, latencyNanos: 1_000, now: t3).isEmpty)
        }
        #expect(backends[1].stats.inFlight == 0)
        // 50 % of 4: a second ejection is allowed, a third is not.
        for _ in 0..<3 { pool.reportOutcome(backends[2], success: false, now: t3) }
        for _ in 0..<3 { pool.reportOutcome(backends[3], success: false, now: t3) }
        let states = pool.snapshot().members.map(\.state)
        #expect(states.filter { $0 == .ejected }.count == 2)
        #expect(pool.snapshot().member(backends[3].endpoint)?.state == .up)
    }

    @Test("slow start ramps the effective weight over the window")
    func slowStart() throws {
        let window: UInt64 = 100
        let pool = try makePool(
            .weightedRoundRobin, weights: [4, 4], health: HealthSettings(rise: 1, fall: 1),
            slowStart: window)
        let returning = endpoints(2)[1]
        pool.recordProbe(returning, success: false, now: 1_000)
        pool.recordProbe(returning, success: true, now: 1_000)
        let full = 4 * WeightScale.factor
        var weights: [Int] = []
        for t: UInt64 in [1_000, 1_025, 1_050, 1_075, 1_099, 1_100, 1_200] {
            pool.tick(now: t)
            weights.append(pool.snapshot().member(returning)!.effectiveWeight)
        }
        #expect(weights.first! < full / 8)
        #expect(weights == weights.sorted())
        #expect(abs(weights[2] - full / 2) <= 1)
        #expect(weights.suffix(2) == [full, full])
        // Slow start does not apply at pool creation.
        #expect(pool.snapshot().member(endpoints(2)[0])!.effectiveWeight == full)
        // Shares follow the ramp: at half time the returning backend takes ≈ 1/3.
        #expect(SlowStart.effectiveWeight(weight: 16, since: 0, now: 50, window: 100) == 8)
        #expect(SlowStart.effectiveWeight(weight: 16, since: nil, now: 50, window: 100) == 16)
    }

    @Test("reconfigure keeps surviving backends' objects and counters")
    func reconfigureKeepsCounters() throws {
        let pool = try makePool(.leastConnections, weights: [1, 1])
        let kept = pool.snapshot().member(endpoints(2)[0])!.backend
        kept.connectionOpened()
        let (removed, events) = try pool.reconfigure(
            settings: PoolSettings(algorithm: .maglev),
            backends: [
                BackendSpec(endpoint: endpoints(2)[0], weight: 2),
                BackendSpec(endpoint: endpoints(3)[2]),
            ], now: 3)
        #expect(removed.map(\.endpoint) == [endpoints(2)[1]])
        #expect(events.contains(.added(endpoints(3)[2])) && events.contains(.weightChanged(endpoints(2)[0], 2)))
        let snapshot = pool.snapshot()
        #expect(snapshot.algorithm == .maglev)
        #expect(snapshot.member(endpoints(2)[0])!.backend === kept)
        #expect(kept.stats.active == 1)
    }

    @Test("a reader sees every published change, and only re-reads when the version moved")
    func readerFollowsVersions() throws {
        let pool = try makePool(.roundRobin, weights: [1, 1])
        var reader = PoolReader(pool)
        let first = reader.snapshot()
        #expect(reader.snapshot() === first)
        try pool.setAdmin(endpoints(2)[0], to: .draining, now: 2)
        let second = reader.snapshot()
        #expect(second !== first && second.version > first.version)
        #expect(second.candidates.count == 1)
    }

    @Test("retries pick a backend not yet tried", arguments: AlgorithmKind.allCases)
    func retryExcludes(kind: AlgorithmKind) throws {
        let snapshot = try makePool(kind, weights: [1, 1, 1]).snapshot()
        let key = PickKey(hash: 4242)
        let first = snapshot.pick(key)!
        let second = snapshot.pick(key, excluding: [first])!
        let third = snapshot.pick(key, excluding: [first, second])!
        #expect(Set([first.name, second.name, third.name]).count == 3)
        #expect(snapshot.pick(key, excluding: [first, second, third]) == nil)
    }
}

@Suite("Latency histogram")
struct LatencyHistogramTests {
    @Test(
        "buckets are ordered and bound their values",
        arguments: [
            UInt64(0), 999, 1_000, 1_500, 2_000, 3_100, 10_000,
            123_456, 1_000_000, 50_000_000, 2_000_000_000, 100_000_000_000,
        ])
    func bucketBounds(nanos: UInt64) {
        let bucket = LatencyHistogram.bucket(forNanos: nanos)
        #expect(bucket >= 0 && bucket < LatencyHistogram.bucketCount)
        if bucket < LatencyHistogram.bucketCount - 1 {
            #expect(nanos < LatencyHistogram.upperBoundNanos(ofBucket: bucket) + 1_000)
            #expect(LatencyHistogram.bucket(forNanos: nanos + 1_000_000) >= bucket)
        }
        if bucket > 0 {
            // Within 25 % of the bucket's upper bound: 4 buckets per doubling.
            #expect(Double(nanos) >= Double(LatencyHistogram.upperBoundNanos(ofBucket: bucket)) * 0.75)
        }
    }

    @Test("quantiles land within one bucket of the exact answer")
    func quantiles() throws {
        let histogram = LatencyHistogram()
        #expect(histogram.quantile(0.5) == nil)
        // 1..1000 ms, uniformly: p50 ≈ 500 ms, p99 ≈ 990 ms.
        for ms in 1...1000 { histogram.record(nanos: UInt64(ms) * 1_000_000) }
        let p50 = Double(try #require(histogram.quantile(0.5))) / 1e6
        let p99 = Double(try #require(histogram.quantile(0.99))) / 1e6
        #expect(p50 >= 500 && p50 <= 500 * 1.25)
        #expect(p99 >= 990 && p99 <= 990 * 1.25)
        #expect(histogram.count == 1000)
        #expect(histogram.sumNanos == 500_500 * 1_000_000)
    }
}
