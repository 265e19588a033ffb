/// Passive outlier detection (`outlier_detection:`): eject a backend after `consecutiveFailures` failed
/// requests or connections, for `baseEjectionTime` × the number of times it was ejected, capped at
/// `maxEjectionTime`, never ejecting more than `maxEjectionPercent` of the pool.
public struct OutlierDetectionConfig: Sendable, Equatable {
    public var consecutiveFailures: Int
    public var baseEjectionTime: Duration
    public var maxEjectionTime: Duration
    public var maxEjectionPercent: Int

    public init(
        consecutiveFailures: Int = 5, baseEjectionTime: Duration = .seconds(30),
        maxEjectionTime: Duration = .seconds(300), maxEjectionPercent: Int = 50
    ) {
        self.consecutiveFailures = consecutiveFailures
        self.baseEjectionTime = baseEjectionTime
        self.maxEjectionTime = maxEjectionTime
        self.maxEjectionPercent = maxEjectionPercent
    }
}
