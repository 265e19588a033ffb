/// Passive outlier detection settings (Envoy's `outlier_detection`, nginx's `max_fails`).
public struct OutlierSettings: Sendable, Equatable {
    /// Failures of live traffic in a row (connect errors, 5xx) that eject a backend.
    public var consecutiveFailures: Int
    /// First ejection time; the n-th ejection in a row lasts n × base, up to `maxEjectionNanos`.
    public var baseEjectionNanos: UInt64
    public var maxEjectionNanos: UInt64
    /// Never eject more than this share of the pool's backends (floor of percent × count / 100).
    public var maxEjectionPercent: Int

    public init(
        consecutiveFailures: Int = 5, baseEjectionNanos: UInt64 = 30_000_000_000,
        maxEjectionNanos: UInt64 = 300_000_000_000, maxEjectionPercent: Int = 50
    ) {
        self.consecutiveFailures = max(1, consecutiveFailures)
        self.baseEjectionNanos = max(1, baseEjectionNanos)
        self.maxEjectionNanos = max(self.baseEjectionNanos, maxEjectionNanos)
        self.maxEjectionPercent = min(100, max(0, maxEjectionPercent))
    }

    /// How many of `poolSize` backends may be ejected at once.
    public func ejectionLimit(poolSize: Int) -> Int {
        poolSize * maxEjectionPercent / 100
    }
}

/// One backend's ejection history: pure, time injected.
public struct OutlierRecord: Sendable, Equatable {
    /// Ejections "in a row": grows with each ejection, shrinks by one per base time of good behaviour.
    public private(set) var multiplier: Int = 0
    public private(set) var ejectedUntil: UInt64?
    private var lastReturn: UInt64 = 0

    public init() {}

    public func isEjected(at now: UInt64) -> Bool {
        if let until = ejectedUntil { return now < until }
        return false
    }

    /// Ejects the backend; returns when it comes back.
    public mutating func eject(at now: UInt64, settings: OutlierSettings) -> UInt64 {
        let forgiven = multiplier > 0 ? Int(min((now &- lastReturn) / settings.baseEjectionNanos, 1 << 20)) : 0
        multiplier = max(0, multiplier - forgiven) + 1
        let (product, overflow) = settings.baseEjectionNanos.multipliedReportingOverflow(by: UInt64(multiplier))
        let duration = overflow ? settings.maxEjectionNanos : min(product, settings.maxEjectionNanos)
        let until = now &+ duration
        ejectedUntil = until
        return until
    }

    /// Ends an ejection whose time is up; returns true when it did.
    public mutating func expire(at now: UInt64) -> Bool {
        guard let until = ejectedUntil, now >= until else { return false }
        ejectedUntil = nil
        lastReturn = now
        return true
    }
}
