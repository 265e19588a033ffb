/// What a data plane knows about a request when it asks for a backend.
public struct PickKey: Sendable {
    /// Stable hash of the request's key (source address, header, cookie, URI or 5-tuple), from
    /// `StableHash`. Ignored by algorithms that do not hash.
    public var hash: UInt64
    /// Monotonic time in nanoseconds from the caller's clock (latency decay).
    public var now: UInt64

    public init(hash: UInt64 = 0, now: UInt64 = 0) {
        self.hash = hash
        self.now = now
    }
}

/// Tunables of the algorithms, fixed when a selector is built.
public struct AlgorithmOptions: Sendable, Equatable {
    /// Maglev lookup-table size M; must be prime and larger than the number of backends.
    public var maglevTableSize: Int = 65537
    /// Bounded-load ε: no backend takes more than ⌈(1+ε)·mean⌉ connections.
    public var boundedLoadFactor: Double = 0.25
    /// Ring-hash virtual nodes per unit of configured weight (ketama uses 160).
    public var ringPointsPerWeight: Int = 160
    /// Time constant τ of the peak-EWMA latency decay.
    public var latencyDecayNanos: UInt64 = 10_000_000_000
    /// Seed of the random choices (random, power-of-two, least-response-time); fixed for reproducible tests.
    public var randomSeed: UInt64 = 0x5eed

    public init() {}
}

/// A load-balancing algorithm: built once from an immutable set of candidates (tables are computed
/// here), then asked concurrently for picks from every event loop and packet worker.
///
/// `candidates` holds only backends that may receive traffic (up, not draining, not ejected; the
/// backups when no primary is left), sorted by name so every node builds the same tables.
/// `pick` never traps: it returns nil only when `candidates` is empty.
public protocol LoadBalancingAlgorithm: Sendable {
    init(candidates: [Candidate], options: AlgorithmOptions)
    func pick(_ key: PickKey) -> Backend?
}

extension AlgorithmKind {
    /// Builds the selector of this kind. Hash-family kinds differ only in the key the caller hashes.
    public func makeSelector(candidates: [Candidate], options: AlgorithmOptions) -> any LoadBalancingAlgorithm {
        switch self {
        case .roundRobin: return RoundRobin(candidates: candidates, options: options)
        case .weightedRoundRobin: return SmoothWeightedRoundRobin(candidates: candidates, options: options)
        case .leastConnections: return LeastConnections(candidates: candidates, options: options)
        case .leastResponseTime: return LeastResponseTime(candidates: candidates, options: options)
        case .powerOfTwo: return PowerOfTwoChoices(candidates: candidates, options: options)
        case .random: return WeightedRandom(candidates: candidates, options: options)
        case .sourceHash, .hash: return ModuloHash(candidates: candidates, options: options)
        case .ringHash: return RingHash(candidates: candidates, options: options)
        case .maglev: return Maglev(candidates: candidates, options: options)
        case .boundedLoad: return BoundedLoadHash(candidates: candidates, options: options)
        }
    }
}
