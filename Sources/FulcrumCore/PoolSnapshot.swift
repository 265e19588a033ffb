/// One member of a pool as of a snapshot.
public struct MemberStatus: Sendable {
    public let backend: Backend
    /// Configured weight.
    public let weight: Int
    public let backup: Bool
    public let admin: AdminState
    public let state: BackendState
    /// Weight in use, in units of `WeightScale.factor` (lower than weight × factor during slow start).
    public let effectiveWeight: Int
    /// The latest active check (live: read from the backend, newer than the snapshot).
    public var lastProbe: ProbeResult? { backend.lastProbe }
    /// When the health state last changed.
    public let stateSince: UInt64
    public let ejectedUntil: UInt64?

    public var endpoint: Endpoint { backend.endpoint }
}

/// An immutable view of a pool with its selector built: what a data plane reads once per connection
/// (proxy) or per batch (packet plane). A pool change publishes a new one; readers never lock.
public final class PoolSnapshot: Sendable {
    public let pool: String
    /// Increases with every published snapshot of this pool.
    public let version: UInt64
    public let algorithm: AlgorithmKind
    /// Every member, in configuration order.
    public let members: [MemberStatus]
    /// The backends picks are made from, sorted by name.
    public let candidates: [Candidate]
    /// True when no primary is up and the backups are serving.
    public let usingBackups: Bool
    private let selector: any LoadBalancingAlgorithm

    init(
        pool: String, version: UInt64, algorithm: AlgorithmKind, members: [MemberStatus], candidates: [Candidate],
        usingBackups: Bool, selector: any LoadBalancingAlgorithm
    ) {
        self.pool = pool
        self.version = version
        self.algorithm = algorithm
        self.members = members
        self.candidates = candidates
        self.usingBackups = usingBackups
        self.selector = selector
    }

    /// A backend for this key, or nil when none is available (every data plane turns that into its
    /// "no backend available" answer: 503, a refused flow, a counted drop).
    @inlinable
    public func pick(_ key: PickKey) -> Backend? {
        pickFromSelector(key)
    }

    @usableFromInline
    func pickFromSelector(_ key: PickKey) -> Backend? {
        selector.pick(key)
    }

    /// A backend not yet tried by this request (retries after a connect failure). Asks the algorithm
    /// again with a derived key a few times, then takes the first untried candidate in ring order.
    public func pick(_ key: PickKey, excluding tried: [Backend]) -> Backend? {
        guard !tried.isEmpty else { return selector.pick(key) }
        let attempts = min(candidates.count, 8)
        for attempt in 0..<attempts {
            var retryKey = key
            retryKey.hash = StableHash.rehash(key.hash, attempt: attempt + tried.count)
            if let backend = selector.pick(retryKey), !tried.contains(where: { $0 === backend }) {
                return backend
            }
        }
        guard !candidates.isEmpty else { return nil }
        let start = StableHash.reduce(key.hash, into: candidates.count)
        for offset in 0..<candidates.count {
            let backend = candidates[(start + offset) % candidates.count].backend
            if !tried.contains(where: { $0 === backend }) { return backend }
        }
        return nil
    }

    /// The same as `pick`, as an error naming the pool when nothing is available.
    public func select(_ key: PickKey) throws(NoBackendAvailable) -> Backend {
        guard let backend = selector.pick(key) else { throw NoBackendAvailable(pool: pool) }
        return backend
    }

    public func member(_ endpoint: Endpoint) -> MemberStatus? {
        members.first { $0.endpoint == endpoint }
    }
}

/// No backend of the pool can take traffic: all are down, draining, disabled or ejected, or the pool is empty.
public struct NoBackendAvailable: Error, Sendable, Equatable, CustomStringConvertible {
    public let pool: String
    public var description: String { "no backend available in pool '\(pool)'" }
}
