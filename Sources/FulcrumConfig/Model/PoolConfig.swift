import FulcrumCore

/// A named set of backends and how to choose among them (`pools.NAME:`).
public struct PoolConfig: Sendable, Equatable {
    /// The pool's name: its key under `pools:` (`[A-Za-z0-9_.-]+`).
    public var name: String
    /// The load-balancing algorithm (default `weighted-round-robin`).
    public var algorithm: AlgorithmKind
    /// What the hash family hashes; nil means the client address (`source`), or the flow in the packet plane.
    public var hashKey: HashKey?
    /// Active health checking; nil means every backend is considered up.
    public var healthCheck: HealthCheckConfig?
    /// Passive outlier detection from live traffic; nil disables it.
    public var outlierDetection: OutlierDetectionConfig?
    /// Ramp-up time for a backend that comes (back) up; nil means full weight at once.
    public var slowStart: Duration?
    /// Maglev lookup table size: prime, ≥ 2 × backends, ≤ 1,000,003 (`maglev` only).
    public var maglevTableSize: Int
    /// ε of consistent hashing with bounded load: no backend exceeds ⌈(1+ε)·mean⌉ (`bounded-load` only).
    public var boundedLoadFactor: Double
    /// The backends, in file order. May be empty (scale out later through the admin API).
    public var backends: [BackendConfig]

    public static let defaultMaglevTableSize = 65537
    public static let maximumMaglevTableSize = 1_000_003
    public static let defaultBoundedLoadFactor = 0.25

    public init(
        name: String, algorithm: AlgorithmKind = .weightedRoundRobin, hashKey: HashKey? = nil,
        healthCheck: HealthCheckConfig? = nil, outlierDetection: OutlierDetectionConfig? = nil,
        slowStart: Duration? = nil, maglevTableSize: Int = PoolConfig.defaultMaglevTableSize,
        boundedLoadFactor: Double = PoolConfig.defaultBoundedLoadFactor, backends: [BackendConfig] = []
    ) {
        self.name = name
        self.algorithm = algorithm
        self.hashKey = hashKey
        self.healthCheck = healthCheck
        self.outlierDetection = outlierDetection
        self.slowStart = slowStart
        self.maglevTableSize = maglevTableSize
        self.boundedLoadFactor = boundedLoadFactor
        self.backends = backends
    }
}
