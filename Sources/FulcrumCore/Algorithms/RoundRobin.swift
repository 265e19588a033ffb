import Synchronization

/// Each candidate in turn, ignoring weights (HAProxy `static-rr` without weights, nginx without weights).
public final class RoundRobin: LoadBalancingAlgorithm {
    private let backends: [Backend]
    private let next = Atomic<Int>(0)

    public init(candidates: [Candidate], options: AlgorithmOptions) {
        backends = candidates.map(\.backend)
    }

    public func pick(_ key: PickKey) -> Backend? {
        guard !backends.isEmpty else { return nil }
        let turn = next.wrappingAdd(1, ordering: .relaxed).oldValue
        return backends[Int(UInt(bitPattern: turn) % UInt(backends.count))]
    }
}
