import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Where a backend stands, as operators and health checks see it.
public enum BackendState: String, Sendable, Equatable, CaseIterable {
    /// Receives new connections.
    case up
    /// Failed its active health checks: no new connections.
    case down
    /// Taken out for a while by passive outlier detection (failures in live traffic).
    case ejected
    /// Set by an operator: established connections finish, no new ones.
    case draining
    /// Set by an operator: out of rotation entirely.
    case disabled
}

/// Weights inside Fulcrum are the configured weight times this scale, so slow start can ramp a
/// weight-1 backend in 16 steps. Every algorithm is scale-invariant.
public enum WeightScale {
    public static let factor = 16
}

/// Load shared by every backend of one pool (bounded-load hashing needs the pool's total without a scan).
public final class PoolLoad: Sendable {
    public let activeConnections = Atomic<Int>(0)
    public init() {}
}

/// Live per-backend counters, written by every data plane and read by the algorithms, lock-free.
public final class BackendStats: Sendable {
    /// Connections in use: proxied TCP connections and packet-plane flows; for HTTP, upstream
    /// connections carrying a request (idle pooled ones do not count, as in nginx). The load that
    /// least-connections, power-of-two and bounded-load compare.
    public let activeConnections = Atomic<Int>(0)
    public let inFlightRequests = Atomic<Int>(0)
    public let totalConnections = Atomic<UInt64>(0)
    public let totalRequests = Atomic<UInt64>(0)
    public let failures = Atomic<UInt64>(0)
    /// Failures in a row from live traffic (reset by any success); drives outlier ejection.
    public let consecutiveFailures = Atomic<Int>(0)
    /// Every request's latency (successes and failures), for p50/p99 and metrics.
    public let latency = LatencyHistogram()
    /// Connection attempts to this backend that failed (refused, timed out).
    public let connectErrors = Atomic<UInt64>(0)
    /// HTTP responses by status class: index 1...5 for 1xx...5xx; index 0 counts requests that got no
    /// response from the backend (connection closed, timed out).
    public let responsesByClass: InlineArray<6, Atomic<UInt64>> = InlineArray { _ in Atomic(0) }
    /// Bytes relayed to this backend (client payload: TCP bytes, HTTP request bodies).
    public let bytesSent = Atomic<UInt64>(0)
    /// Bytes relayed from this backend (TCP bytes, HTTP response bodies).
    public let bytesReceived = Atomic<UInt64>(0)

    /// Peak-EWMA latency in nanoseconds (a `Double` bit pattern) and when it was last updated.
    private let ewmaBits = Atomic<UInt64>(0)
    private let ewmaStamp = Atomic<UInt64>(0)

    public init() {}

    /// Counts one HTTP response (or, with `status` nil, a request that got none).
    public func recordResponse(status: Int?) {
        let index = status.map { min(max($0 / 100, 1), 5) } ?? 0
        responsesByClass[index].wrappingAdd(1, ordering: .relaxed)
    }

    /// Adds relayed bytes; data planes call it per read (TCP) or once per request (HTTP), not per byte.
    @inlinable
    public func recordBytes(sent: Int, received: Int) {
        if sent > 0 { bytesSent.wrappingAdd(UInt64(sent), ordering: .relaxed) }
        if received > 0 { bytesReceived.wrappingAdd(UInt64(received), ordering: .relaxed) }
    }

    /// Responses by class, index 0 (none) to 5 (5xx).
    public var responseCounts: [UInt64] { (0..<6).map { responsesByClass[$0].load(ordering: .relaxed) } }

    /// Current active connections (relaxed read, for display and tests).
    public var active: Int { activeConnections.load(ordering: .relaxed) }
    /// Current in-flight requests (relaxed read).
    public var inFlight: Int { inFlightRequests.load(ordering: .relaxed) }

    /// Records one latency observation. Peak-sensitive: a slower sample replaces the average at once,
    /// a faster one pulls it down with weight `1 - exp(-Δt/τ)` (Finagle / Linkerd "peak EWMA").
    public func observeLatency(nanos: UInt64, now: UInt64, decayNanos: UInt64) {
        let sample = Double(nanos)
        let previousStamp = ewmaStamp.exchange(now, ordering: .relaxed)
        let elapsed = now > previousStamp ? Double(now - previousStamp) : 0
        let w = exp(-elapsed / Double(max(decayNanos, 1)))
        var current = ewmaBits.load(ordering: .relaxed)
        while true {
            let old = Double(bitPattern: current)
            let updated = (sample > old || previousStamp == 0) ? sample : old * w + sample * (1 - w)
            let (exchanged, original) = ewmaBits.compareExchange(
                expected: current, desired: updated.bitPattern, ordering: .relaxed)
            if exchanged { return }
            current = original
        }
    }

    /// The latency estimate decayed to `now`, so a backend that has not been used for a while
    /// (perhaps because it was slow) is tried again.
    public func latencyEstimate(now: UInt64, decayNanos: UInt64) -> Double {
        let value = Double(bitPattern: ewmaBits.load(ordering: .relaxed))
        let stamp = ewmaStamp.load(ordering: .relaxed)
        guard now > stamp, value > 0 else { return value }
        return value * exp(-Double(now - stamp) / Double(max(decayNanos, 1)))
    }
}

/// One server behind the balancer. The object lives as long as the backend is in its pool, across
/// snapshots, so its counters survive pool changes; a removed and re-added backend is a new object.
public final class Backend: Sendable, CustomStringConvertible {
    public let endpoint: Endpoint
    /// Stable name hashed by the consistent algorithms: the same on every node.
    public let name: String
    public let stats = BackendStats()
    public let poolLoad: PoolLoad
    /// The data planes' open connections to this backend, so an operator can close them
    /// (`DELETE ...?force=true`).
    public let connections = ConnectionRegistry()
    /// The last active health check, kept here (not in snapshots) so every probe is visible at once
    /// without rebuilding the selector. Control plane only.
    private let lastProbeResult = Mutex<ProbeResult?>(nil)

    public init(endpoint: Endpoint, poolLoad: PoolLoad = PoolLoad()) {
        self.endpoint = endpoint
        self.name = endpoint.description
        self.poolLoad = poolLoad
    }

    public var description: String { name }

    /// The most recent active health check of this backend, if any.
    public var lastProbe: ProbeResult? {
        get { lastProbeResult.withLock { $0 } }
        set { lastProbeResult.withLock { $0 = newValue } }
    }

    // MARK: Data-plane hooks: every data plane calls these, the same way.

    /// A connection (proxy) or flow (packet plane) to this backend was opened.
    @inlinable
    public func connectionOpened() {
        stats.activeConnections.wrappingAdd(1, ordering: .relaxed)
        stats.totalConnections.wrappingAdd(1, ordering: .relaxed)
        poolLoad.activeConnections.wrappingAdd(1, ordering: .relaxed)
    }

    /// The connection opened with `connectionOpened()` is gone.
    @inlinable
    public func connectionClosed() {
        stats.activeConnections.wrappingSubtract(1, ordering: .relaxed)
        poolLoad.activeConnections.wrappingSubtract(1, ordering: .relaxed)
    }

    /// A request was sent to this backend.
    @inlinable
    public func requestStarted() {
        stats.inFlightRequests.wrappingAdd(1, ordering: .relaxed)
        stats.totalRequests.wrappingAdd(1, ordering: .relaxed)
    }

    /// A request finished (or failed). Returns the number of failures in a row; data planes call
    /// `Pool.requestFinished`, which calls this and compares the streak with the outlier threshold.
    @discardableResult
    public func requestFinished(success: Bool, latencyNanos: UInt64, now: UInt64, decayNanos: UInt64) -> Int {
        stats.inFlightRequests.wrappingSubtract(1, ordering: .relaxed)
        stats.latency.record(nanos: latencyNanos)
        if success {
            stats.observeLatency(nanos: latencyNanos, now: now, decayNanos: decayNanos)
        }
        return recordOutcome(success: success)
    }

    /// A request ended without saying anything about the backend (the client left, a stale keep-alive
    /// connection): only the in-flight count drops; latency and failure streak stay as they were.
    @inlinable
    public func requestAbandoned() {
        stats.inFlightRequests.wrappingSubtract(1, ordering: .relaxed)
    }

    /// Records the outcome of a connection attempt or request without touching the in-flight count.
    @discardableResult
    public func recordOutcome(success: Bool) -> Int {
        if success {
            if stats.consecutiveFailures.load(ordering: .relaxed) != 0 {
                stats.consecutiveFailures.store(0, ordering: .relaxed)
            }
            return 0
        }
        stats.failures.wrappingAdd(1, ordering: .relaxed)
        return stats.consecutiveFailures.wrappingAdd(1, ordering: .relaxed).newValue
    }
}

/// A backend with the weight it has in one snapshot (configured weight × scale, ramped by slow start).
public struct Candidate: Sendable {
    public let backend: Backend
    public let weight: Int

    public init(backend: Backend, weight: Int) {
        self.backend = backend
        self.weight = max(1, weight)
    }
}

/// Close actions for the connections open to one backend: a data plane registers one per connection
/// and unregisters it when the connection ends; `closeAll` runs them. Two short locks per connection
/// (not per request), none on the data path otherwise.
public final class ConnectionRegistry: Sendable {
    private let closers = Mutex<[UInt64: @Sendable () -> Void]>([:])
    private let nextID = Atomic<UInt64>(0)

    public init() {}

    /// Registers how to close one connection; keep the id to unregister it.
    public func register(_ close: @escaping @Sendable () -> Void) -> UInt64 {
        let id = nextID.wrappingAdd(1, ordering: .relaxed).newValue
        closers.withLock { $0[id] = close }
        return id
    }

    public func unregister(_ id: UInt64) {
        _ = closers.withLock { $0.removeValue(forKey: id) }
    }

    public var count: Int { closers.withLock { $0.count } }

    /// Closes every registered connection (outside the lock: a closer may unregister itself).
    public func closeAll() {
        let all = closers.withLock { Array($0.values) }
        for close in all { close() }
    }
}
