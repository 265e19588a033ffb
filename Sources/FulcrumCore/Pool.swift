import Synchronization

/// A pool shared by every data plane: control-plane changes go through its methods (serialised by a
/// mutex, off the hot path) and each publishes a new immutable `PoolSnapshot`; readers take the
/// current snapshot without locking through a `PoolReader`.
public final class Pool: Sendable {
    public let name: String
    private let state: Mutex<PoolState>
    private let published: Mutex<PoolSnapshot>
    private let publishedVersion: Atomic<UInt64>
    /// Outlier threshold (0: off), readable without the pool lock on the data path.
    private let outlierThreshold: Atomic<Int>
    private let noBackendAvailableCount = Atomic<UInt64>(0)
    private let observers = Mutex<[@Sendable (Pool, [PoolEvent]) -> Void]>([])
    /// Latency decay τ of the current settings, for `requestFinished` without the pool lock.
    private let latencyDecayNanos: Atomic<UInt64>

    public init(name: String, settings: PoolSettings, backends: [BackendSpec], now: UInt64) throws(PoolError) {
        self.name = name
        let initial = try PoolState(name: name, settings: settings, backends: backends, now: now)
        state = Mutex(initial)
        published = Mutex(initial.makeSnapshot(version: 1, now: now))
        publishedVersion = Atomic(1)
        outlierThreshold = Atomic(settings.outlier?.consecutiveFailures ?? 0)
        latencyDecayNanos = Atomic(settings.options.latencyDecayNanos)
    }

    /// Version of the current snapshot; cheap, lock-free.
    public var version: UInt64 { publishedVersion.load(ordering: .acquiring) }

    /// The current snapshot (takes a short lock; data planes use a `PoolReader` instead).
    public func snapshot() -> PoolSnapshot {
        published.withLock { $0 }
    }

    public var settings: PoolSettings { state.withLock { $0.settings } }

    /// Registers a function called with the events of every change, from whichever plane caused it
    /// (health checks, live traffic, operators, reloads, time): logs, metrics and the HA mirror
    /// observe the same stream. Called after the change is published, outside the pool lock.
    public func addObserver(_ observer: @escaping @Sendable (_ pool: Pool, _ events: [PoolEvent]) -> Void) {
        observers.withLock { $0.append(observer) }
    }

    // MARK: Changes. Each returns the events it caused, after publishing the new snapshot.

    @discardableResult
    public func add(_ spec: BackendSpec, healthy: Bool? = nil, now: UInt64) throws(PoolError) -> [PoolEvent] {
        try change(now: now) { (s: inout PoolState) throws(PoolError) in try s.add(spec, healthy: healthy, now: now) }
    }

    /// Removes the backend from rotation at once; returns it so the caller can drain its connections.
    @discardableResult
    public func remove(_ endpoint: Endpoint, now: UInt64) throws(PoolError) -> (Backend, [PoolEvent]) {
        var removed: Backend?
        let events = try change(now: now) { (s: inout PoolState) throws(PoolError) in
            let (backend, events) = try s.remove(endpoint, now: now)
            removed = backend
            return events
        }
        return (removed!, events)
    }

    @discardableResult
    public func setWeight(_ endpoint: Endpoint, to weight: Int, now: UInt64) throws(PoolError) -> [PoolEvent] {
        try change(now: now) { (s: inout PoolState) throws(PoolError) in try s.setWeight(endpoint, to: weight, now: now)
        }
    }

    @discardableResult
    public func setAdmin(_ endpoint: Endpoint, to admin: AdminState, now: UInt64) throws(PoolError) -> [PoolEvent] {
        try change(now: now) { (s: inout PoolState) throws(PoolError) in try s.setAdmin(endpoint, to: admin, now: now) }
    }

    @discardableResult
    public func reconfigure(
        settings: PoolSettings, backends: [BackendSpec], now: UInt64
    ) throws(PoolError)
        -> (removed: [Backend], events: [PoolEvent])
    {
        var removed: [Backend] = []
        let events = try change(now: now) { (s: inout PoolState) throws(PoolError) in
            let result = try s.reconfigure(settings: settings, backends: backends, now: now)
            removed = result.removed
            return result.events
        }
        return (removed, events)
    }

    @discardableResult
    public func recordProbe(_ endpoint: Endpoint, success: Bool, detail: String = "", now: UInt64) -> [PoolEvent] {
        changeIfNeeded(now: now) { s in
            let events = s.recordProbe(endpoint, success: success, detail: detail, now: now)
            return (events, !events.isEmpty)
        }
    }

    /// Reports the outcome of a connection attempt (proxy connect, packet-plane flow setup).
    /// Takes the pool lock only when the failure streak reaches the outlier threshold.
    @discardableResult
    public func reportOutcome(_ backend: Backend, success: Bool, now: UInt64) -> [PoolEvent] {
        if !success { backend.stats.connectErrors.wrappingAdd(1, ordering: .relaxed) }
        return checkStreak(backend, streak: backend.recordOutcome(success: success), now: now)
    }

    /// Counts a request or connection turned away because no backend was available (metrics).
    public func recordNoBackendAvailable() {
        noBackendAvailableCount.wrappingAdd(1, ordering: .relaxed)
    }

    /// How many requests or connections found no backend available.
    public var noBackendAvailable: UInt64 { noBackendAvailableCount.load(ordering: .relaxed) }

    /// Ends a request started with `backend.requestStarted()`: updates in-flight count, latency
    /// (successes only) and the failure streak, and ejects the backend when the streak calls for it.
    @discardableResult
    public func requestFinished(_ backend: Backend, success: Bool, latencyNanos: UInt64, now: UInt64) -> [PoolEvent] {
        let streak = backend.requestFinished(
            success: success, latencyNanos: latencyNanos, now: now,
            decayNanos: latencyDecayNanos.load(ordering: .relaxed))
        return checkStreak(backend, streak: streak, now: now)
    }

    /// Advances time (ejections ending, slow starts ramping); call it periodically (e.g. every second).
    @discardableResult
    public func tick(now: UInt64) -> [PoolEvent] {
        changeIfNeeded(now: now) { s in
            let (events, weightsChanged) = s.tick(now: now)
            return (events, weightsChanged || !events.isEmpty)
        }
    }

    // MARK: Private

    private func checkStreak(_ backend: Backend, streak: Int, now: UInt64) -> [PoolEvent] {
        let threshold = outlierThreshold.load(ordering: .relaxed)
        guard threshold > 0, streak >= threshold else { return [] }
        return changeIfNeeded(now: now) { s in
            let events = s.reportFailureStreak(backend, streak: streak, now: now)
            return (events, !events.isEmpty)
        }
    }

    private func change(
        now: UInt64, _ body: (inout PoolState) throws(PoolError) -> [PoolEvent]
    ) throws(PoolError) -> [PoolEvent] {
        let events = try state.withLock { (s: inout PoolState) throws(PoolError) -> [PoolEvent] in
            let events = try body(&s)
            publish(s, now: now)
            return events
        }
        notify(events)
        return events
    }

    private func changeIfNeeded(now: UInt64, _ body: (inout PoolState) -> ([PoolEvent], Bool)) -> [PoolEvent] {
        let events = state.withLock { s in
            let (events, republish) = body(&s)
            if republish { publish(s, now: now) }
            return events
        }
        notify(events)
        return events
    }

    /// Tells the observers, outside the pool lock (they may read the pool).
    private func notify(_ events: [PoolEvent]) {
        guard !events.isEmpty else { return }
        for observer in observers.withLock({ $0 }) { observer(self, events) }
    }

    /// Builds and swaps in a new snapshot; called with the state lock held so versions stay ordered.
    private func publish(_ s: PoolState, now: UInt64) {
        outlierThreshold.store(s.settings.outlier?.consecutiveFailures ?? 0, ordering: .relaxed)
        latencyDecayNanos.store(s.settings.options.latencyDecayNanos, ordering: .relaxed)
        let version = publishedVersion.load(ordering: .relaxed) + 1
        let snapshot = s.makeSnapshot(version: version, now: now)
        published.withLock { $0 = snapshot }
        publishedVersion.store(version, ordering: .releasing)
    }
}

/// A per-thread (per event loop, per packet worker) handle on a pool's current snapshot: one atomic
/// load per read, and a short lock only when a new snapshot was published since the last read.
public struct PoolReader {
    public let pool: Pool
    private var cached: PoolSnapshot

    public init(_ pool: Pool) {
        self.pool = pool
        cached = pool.snapshot()
    }

    public mutating func snapshot() -> PoolSnapshot {
        if pool.version != cached.version { cached = pool.snapshot() }
        return cached
    }
}
