import Synchronization

/// Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam 2018; HAProxy
/// `hash-balance-factor`): the key's place on the ring decides, unless that backend already holds
/// its cap of ⌈(1+ε)·(total+1)·w/W⌉ connections, in which case the walk continues clockwise to the
/// first backend under its cap. Keys stay sticky while load is even and spill over when it is not.
public struct BoundedLoadHash: LoadBalancingAlgorithm {
    private let candidates: [Candidate]
    private let ring: HashRing
    private let factor: Double
    private let totalWeight: Double

    public init(candidates: [Candidate], options: AlgorithmOptions) {
        self.candidates = candidates
        ring = HashRing(candidates: candidates, pointsPerWeight: options.ringPointsPerWeight)
        factor = 1 + max(0, options.boundedLoadFactor)
        totalWeight = Double(candidates.reduce(0) { $0 + $1.weight })
    }

    /// The most connections `candidate` may hold once a connection is added to a pool holding `total`.
    public func capacity(of candidate: Candidate, poolTotal total: Int) -> Int {
        let share = Double(total + 1) * Double(candidate.weight) / totalWeight
        return max(1, Int((factor * share).rounded(.up)))
    }

    public func pick(_ key: PickKey) -> Backend? {
        guard let first = candidates.first, !ring.isEmpty else { return nil }
        let total = max(0, first.backend.poolLoad.activeConnections.load(ordering: .relaxed))
        var index = ring.firstIndex(atOrAfter: key.hash)
        for _ in 0..<ring.points.count {
            let candidate = candidates[Int(ring.owners[index])]
            let active = candidate.backend.stats.activeConnections.load(ordering: .relaxed)
            if active < capacity(of: candidate, poolTotal: total) {
                return candidate.backend
            }
            index += 1
            if index == ring.points.count { index = 0 }
        }
        // Only reachable when counters moved under us mid-walk: stay sticky rather than fail.
        return candidates[Int(ring.owners[ring.firstIndex(atOrAfter: key.hash)])].backend
    }
}
