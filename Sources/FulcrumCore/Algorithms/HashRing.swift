/// A ketama-style consistent-hash ring: each candidate owns virtual nodes in proportion to its
/// weight, placed by a stable hash of its name, so removing one backend moves only the keys that
/// landed on its points (≈ 1/N). Shared by `RingHash` and `BoundedLoadHash`.
struct HashRing: Sendable {
    /// Upper bound on virtual nodes; heavier rings are thinned proportionally.
    static let maximumPoints = 1 << 22

    /// Sorted point positions and, at the same index, the candidate that owns each point.
    let points: [UInt64]
    let owners: [Int32]

    init(candidates: [Candidate], pointsPerWeight: Int) {
        let perCandidate = candidates.map { max(1, pointsPerWeight * $0.weight / WeightScale.factor) }
        let total = perCandidate.reduce(0, +)
        let counts =
            total > Self.maximumPoints
            ? perCandidate.map { max(1, $0 * Self.maximumPoints / total) } : perCandidate
        var ring: [(UInt64, Int32)] = []
        ring.reserveCapacity(counts.reduce(0, +))
        for (index, candidate) in candidates.enumerated() {
            let nameHash = StableHash.hash(candidate.backend.name)
            for replica in 0..<counts[index] {
                let point = StableHash.fmix64(nameHash ^ (UInt64(replica + 1) &* 0x9e37_79b9_7f4a_7c15))
                ring.append((point, Int32(index)))
            }
        }
        // Ties (vanishingly rare) are broken by name order, so every node builds the same ring.
        ring.sort { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }
        points = ring.map(\.0)
        owners = ring.map(\.1)
    }

    var isEmpty: Bool { points.isEmpty }

    /// Index of the first point at or after `hash`, wrapping to 0 past the end.
    @inline(__always)
    func firstIndex(atOrAfter hash: UInt64) -> Int {
        var low = 0
        var high = points.count
        while low < high {
            let mid = (low + high) >> 1
            if points[mid] < hash { low = mid + 1 } else { high = mid }
        }
        return low == points.count ? 0 : low
    }
}
