import Synchronization

/// Least response time: the candidate with the lowest peak-EWMA latency × (in-flight + 1), per unit
/// of weight, of two random choices (Finagle's and Linkerd's "P2C + peak EWMA").
///
/// Latency is the decaying peak-EWMA kept in each backend's stats (`BackendStats.observeLatency`);
/// comparing two random candidates rather than all keeps the pick O(1) and stops every balancer
/// from herding onto the one fastest backend. A backend with no sample yet costs `unmeasuredNanos`.
public final class LeastResponseTime: LoadBalancingAlgorithm {
    private let candidates: [Candidate]
    private let random: FastRandom
    private let decay: UInt64
    /// Cost floor so in-flight counts still matter before the first latency sample.
    static let unmeasuredNanos = 1_000.0

    public init(candidates: [Candidate], options: AlgorithmOptions) {
        self.candidates = candidates
        random = FastRandom(seed: options.randomSeed)
        decay = options.latencyDecayNanos
    }

    public func pick(_ key: PickKey) -> Backend? {
        guard let (a, b) = TwoChoices.draw(count: candidates.count, random: random) else {
            return candidates.first?.backend
        }
        let first = candidates[a]
        let second = candidates[b]
        return cost(second, now: key.now) < cost(first, now: key.now) ? second.backend : first.backend
    }

    @inline(__always)
    private func cost(_ candidate: Candidate, now: UInt64) -> Double {
        let stats = candidate.backend.stats
        let latency = max(stats.latencyEstimate(now: now, decayNanos: decay), Self.unmeasuredNanos)
        let inFlight = Double(stats.inFlightRequests.load(ordering: .relaxed) + 1)
        return latency * inFlight / Double(candidate.weight)
    }
}
