import FulcrumCore

extension PoolConfig {
    /// The core's settings for this pool: algorithm and its tunables, rise/fall, outlier ejection, slow start.
    public var poolSettings: PoolSettings {
        var options = AlgorithmOptions()
        options.maglevTableSize = maglevTableSize
        options.boundedLoadFactor = boundedLoadFactor
        return PoolSettings(
            algorithm: algorithm, options: options,
            health: healthCheck.map { HealthSettings(rise: $0.rise, fall: $0.fall) },
            outlier: outlierDetection.map {
                OutlierSettings(
                    consecutiveFailures: $0.consecutiveFailures, baseEjectionNanos: $0.baseEjectionTime.nanoseconds,
                    maxEjectionNanos: $0.maxEjectionTime.nanoseconds, maxEjectionPercent: $0.maxEjectionPercent)
            },
            slowStartNanos: slowStart?.nanoseconds ?? 0)
    }

    /// The backends as the core takes them.
    public var backendSpecs: [BackendSpec] {
        backends.map { BackendSpec(endpoint: $0.address, weight: $0.weight, backup: $0.backup) }
    }

    /// What the hash family hashes when no `hash_key` is given: the client address.
    public var effectiveHashKey: HashKey { hashKey ?? .source }
}
