/// Random choice in proportion to weight, O(1) per pick with Vose's alias method: each column holds
/// its own backend and an alias, and one random number picks the column and the side.
public final class WeightedRandom: LoadBalancingAlgorithm {
    private let backends: [Backend]
    /// Probability (scaled to 2^32) of keeping the column's own backend; the rest goes to `alias`.
    private let keep: [UInt32]
    private let alias: [Int32]
    private let random: FastRandom

    public init(candidates: [Candidate], options: AlgorithmOptions) {
        backends = candidates.map(\.backend)
        random = FastRandom(seed: options.randomSeed)
        (keep, alias) = WeightedRandom.aliasTable(weights: candidates.map(\.weight))
    }

    public func pick(_ key: PickKey) -> Backend? {
        guard !backends.isEmpty else { return nil }
        let r = random.next()
        let column = StableHash.reduce(r, into: backends.count)
        let coin = UInt32(truncatingIfNeeded: r)
        return backends[coin < keep[column] ? column : Int(alias[column])]
    }

    static func aliasTable(weights: [Int]) -> ([UInt32], [Int32]) {
        let n = weights.count
        guard n > 0 else { return ([], []) }
        let total = Double(weights.reduce(0, +))
        var scaled = weights.map { Double($0) * Double(n) / total }
        var keep = [UInt32](repeating: UInt32.max, count: n)
        var alias = (0..<n).map { Int32($0) }
        var small = scaled.indices.filter { scaled[$0] < 1 }
        var large = scaled.indices.filter { scaled[$0] >= 1 }
        while let s = small.popLast(), let l = large.popLast() {
            keep[s] = UInt32(min(scaled[s] * 4_294_967_296, 4_294_967_295))
            alias[s] = Int32(l)
            scaled[l] -= 1 - scaled[s]
            if scaled[l] < 1 { small.append(l) } else { large.append(l) }
        }
        // Leftovers are 1 up to rounding: they keep their own backend.
        return (keep, alias)
    }
}
