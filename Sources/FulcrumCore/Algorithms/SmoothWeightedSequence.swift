/// nginx's smooth weighted round robin, unrolled into one period.
///
/// Each step every candidate's `current` grows by its weight; the largest (first on ties) is chosen
/// and loses the total. The sequence repeats after Σweights steps, so it is computed once at build
/// and the hot path only indexes it (HAProxy's map-based `lb_map.c` does the same), lock-free.
/// Used by weighted round robin (in turn) and by the modulo hash (indexed by the key's hash).
enum SmoothWeightedSequence {
    /// Longest period kept; heavier pools are scaled down proportionally (each weight stays ≥ 1).
    static let maximumLength = 1 << 16

    static func build(weights: [Int]) -> [Int32] {
        guard !weights.isEmpty else { return [] }
        var reduced = normalise(weights)
        let total = reduced.reduce(0, +)
        if reduced.allSatisfy({ $0 == reduced[0] }) {
            return (0..<weights.count).map { Int32($0) }
        }
        if total > maximumLength {
            reduced = reduced.map { max(1, $0 * maximumLength / total) }
        }
        let sum = reduced.reduce(0, +)
        var current = [Int](repeating: 0, count: reduced.count)
        var sequence = [Int32]()
        sequence.reserveCapacity(sum)
        for _ in 0..<sum {
            var best = 0
            for i in 0..<reduced.count {
                current[i] += reduced[i]
                if current[i] > current[best] { best = i }
            }
            current[best] -= sum
            sequence.append(Int32(best))
        }
        return sequence
    }

    /// Divides every weight by their greatest common divisor (keeps the period short).
    static func normalise(_ weights: [Int]) -> [Int] {
        func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : gcd(b, a % b) }
        let divisor = weights.reduce(0) { gcd($0, max($1, 1)) }
        return weights.map { max($0, 1) / max(divisor, 1) }
    }
}
