import Synchronization

/// Smooth weighted round robin (nginx): shares follow the weights and the heavy backend is
/// interleaved with the others instead of receiving its share in a burst (5/1/1 → a a b a c a a).
public final class SmoothWeightedRoundRobin: LoadBalancingAlgorithm {
    private let backends: [Backend]
    private let sequence: [Int32]
    private let next = Atomic<Int>(0)

    public init(candidates: [Candidate], options: AlgorithmOptions) {
        backends = candidates.map(\.backend)
        sequence = SmoothWeightedSequence.build(weights: candidates.map(\.weight))
    }

    public func pick(_ key: PickKey) -> Backend? {
        guard !sequence.isEmpty else { return nil }
        let turn = next.wrappingAdd(1, ordering: .relaxed).oldValue
        return backends[Int(sequence[Int(UInt(bitPattern: turn) % UInt(sequence.count))])]
    }
}
