/// Consistent hashing on a ketama ring (nginx `hash ... consistent`, HAProxy `hash-type consistent`,
/// Envoy `RING_HASH`): a key sticks to its backend, and a pool change moves only ≈ 1/N of keys.
/// O(log points) per pick.
public struct RingHash: LoadBalancingAlgorithm {
    private let backends: [Backend]
    private let ring: HashRing

    public init(candidates: [Candidate], options: AlgorithmOptions) {
        backends = candidates.map(\.backend)
        ring = HashRing(candidates: candidates, pointsPerWeight: options.ringPointsPerWeight)
    }

    public func pick(_ key: PickKey) -> Backend? {
        guard !ring.isEmpty else { return nil }
        return backends[Int(ring.owners[ring.firstIndex(atOrAfter: key.hash)])]
    }
}
