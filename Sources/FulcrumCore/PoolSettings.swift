/// How a pool balances and judges its backends; everything but the backends themselves.
public struct PoolSettings: Sendable, Equatable {
    public var algorithm: AlgorithmKind
    public var options: AlgorithmOptions
    /// Active health checks' rise/fall; nil when the pool has no active checks (backends count as up).
    public var health: HealthSettings?
    /// Passive outlier ejection; nil when off.
    public var outlier: OutlierSettings?
    /// Slow-start window in nanoseconds; 0 when off.
    public var slowStartNanos: UInt64

    public init(
        algorithm: AlgorithmKind = .weightedRoundRobin, options: AlgorithmOptions = AlgorithmOptions(),
        health: HealthSettings? = nil, outlier: OutlierSettings? = nil, slowStartNanos: UInt64 = 0
    ) {
        self.algorithm = algorithm
        self.options = options
        self.health = health
        self.outlier = outlier
        self.slowStartNanos = slowStartNanos
    }
}

/// One backend as configured: where it is, its weight and whether it is a backup.
public struct BackendSpec: Sendable, Equatable {
    public static let weightRange = 1...256

    public var endpoint: Endpoint
    public var weight: Int
    public var backup: Bool

    public init(endpoint: Endpoint, weight: Int = 1, backup: Bool = false) {
        self.endpoint = endpoint
        self.weight = weight
        self.backup = backup
    }
}

/// What an operator has said about a backend.
public enum AdminState: String, Sendable, Equatable, CaseIterable {
    case enabled
    /// No new connections; established ones finish.
    case draining
    /// Out of rotation.
    case disabled
}

/// Something that changed in a pool, for logs, metrics and the admin API. Emitted once per change.
public enum PoolEvent: Sendable, Equatable {
    case added(Endpoint)
    case removed(Endpoint)
    case healthChanged(Endpoint, healthy: Bool, detail: String)
    case ejected(Endpoint, forNanos: UInt64)
    case returned(Endpoint)
    case adminChanged(Endpoint, AdminState)
    case weightChanged(Endpoint, Int)
    /// The pool switched to (true) or away from (false) its backup backends.
    case usingBackups(Bool)
}

/// Why a pool change was refused.
public enum PoolError: Error, Sendable, Equatable, CustomStringConvertible {
    case duplicateBackend(Endpoint)
    case unknownBackend(Endpoint)
    case invalidWeight(Int)

    public var description: String {
        switch self {
        case .duplicateBackend(let e): return "backend \(e) is already in the pool"
        case .unknownBackend(let e): return "no backend \(e) in the pool"
        case .invalidWeight(let w):
            return
                "weight \(w) is out of range \(BackendSpec.weightRange.lowerBound)-\(BackendSpec.weightRange.upperBound)"
        }
    }
}
