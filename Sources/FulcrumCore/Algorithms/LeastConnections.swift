import Synchronization

/// Fewest active connections per unit of weight (HAProxy `leastconn`, nginx `least_conn`).
///
/// Compares `active / weight` by cross-multiplication (no division); a rotating start makes ties
/// rotate, so idle equal backends share new connections instead of the first one taking them all.
/// O(N) per pick, like nginx: exact, which is what operators expect from this name. The scan reads
/// the counters through unretained references (the `backends` array keeps them alive) so it costs
/// a load and a compare per backend, not reference counting.
public final class LeastConnections: LoadBalancingAlgorithm {
    private let backends: [Backend]
    private let counters: [Unmanaged<BackendStats>]
    private let weights: [Int]
    private let start = Atomic<Int>(0)

    public init(candidates: [Candidate], options: AlgorithmOptions) {
        backends = candidates.map(\.backend)
        counters = backends.map { Unmanaged.passUnretained($0.stats) }
        weights = candidates.map(\.weight)
    }

    public func pick(_ key: PickKey) -> Backend? {
        let count = backends.count
        guard count > 0 else { return nil }
        let first = Int(UInt(bitPattern: start.wrappingAdd(1, ordering: .relaxed).oldValue) % UInt(count))
        let best = counters.withUnsafeBufferPointer { counters in
            weights.withUnsafeBufferPointer { weights in
                var best = first
                var bestActive = counters[first]._withUnsafeGuaranteedRef {
                    $0.activeConnections.load(ordering: .relaxed)
                }
                var index = first + 1
                for _ in 1..<count {
                    if index == count { index = 0 }
                    let active = counters[index]._withUnsafeGuaranteedRef {
                        $0.activeConnections.load(ordering: .relaxed)
                    }
                    // active / weight < bestActive / bestWeight
                    if active * weights[best] < bestActive * weights[index] {
                        best = index
                        bestActive = active
                    }
                    index += 1
                }
                return best
            }
        }
        return backends[best]
    }
}
