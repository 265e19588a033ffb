import Synchronization

/// Power of two choices: two distinct random candidates, the one with less load per unit of weight
/// wins (Mitzenmacher; Envoy's least-request). O(1), and no herding when many balancers share the
/// backends without sharing their counters.
public final class PowerOfTwoChoices: LoadBalancingAlgorithm {
    private let candidates: [Candidate]
    private let random: FastRandom

    public init(candidates: [Candidate], options: AlgorithmOptions) {
        self.candidates = candidates
        random = FastRandom(seed: options.randomSeed)
    }

    public func pick(_ key: PickKey) -> Backend? {
        guard let (a, b) = TwoChoices.draw(count: candidates.count, random: random) else {
            return candidates.first?.backend
        }
        let first = candidates[a]
        let second = candidates[b]
        // (active + 1) / weight: the load each would have with this connection added.
        let loadA = (first.backend.stats.activeConnections.load(ordering: .relaxed) + 1) * second.weight
        let loadB = (second.backend.stats.activeConnections.load(ordering: .relaxed) + 1) * first.weight
        return loadB < loadA ? second.backend : first.backend
    }
}

/// Two distinct random indices below `count`, from one random number.
enum TwoChoices {
    @inline(__always)
    static func draw(count: Int, random: FastRandom) -> (Int, Int)? {
        guard count > 1 else { return nil }
        let r = random.next()
        let a = StableHash.reduce(r, into: count)
        let offset = 1 + StableHash.reduce(r << 32 | r >> 32, into: count - 1)
        let b = (a + offset) % count
        return (a, b)
    }
}
