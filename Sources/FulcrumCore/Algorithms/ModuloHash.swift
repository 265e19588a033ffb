/// Hash of the request key over the weighted table (HAProxy `hash-type map-based`, nginx `hash`
/// without `consistent`): the same key always reaches the same backend while the pool is unchanged.
/// `source-hash` is this algorithm with the client address as the key; `hash` takes a header,
/// cookie or URI. Far more than 1/N of keys move when the pool changes (≈ 28 % when 1 of 10 leaves):
/// use ring-hash or maglev when that matters.
public struct ModuloHash: LoadBalancingAlgorithm {
    private let backends: [Backend]
    private let table: [Int32]

    public init(candidates: [Candidate], options: AlgorithmOptions) {
        backends = candidates.map(\.backend)
        table = SmoothWeightedSequence.build(weights: candidates.map(\.weight))
    }

    public func pick(_ key: PickKey) -> Backend? {
        guard !table.isEmpty else { return nil }
        return backends[Int(table[StableHash.reduce(key.hash, into: table.count)])]
    }
}
