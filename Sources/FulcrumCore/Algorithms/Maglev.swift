/// Maglev consistent hashing (Eisenbud et al., NSDI '16): every backend walks its own permutation of
/// a prime-sized table and claims its next free slot in turn (weighted: turns in proportion to
/// weight), so shares are even to within one slot, a pick is one table read, and removing a backend
/// moves little more than its own slots. The default for the packet plane and for clusters: every
/// node with the same backends builds the same table (candidates are sorted by name).
public struct Maglev: LoadBalancingAlgorithm {
    private let backends: [Backend]
    /// Slot → index into `backends`.
    let table: [Int32]

    public init(candidates: [Candidate], options: AlgorithmOptions) {
        backends = candidates.map(\.backend)
        table = Maglev.buildTable(
            names: candidates.map(\.backend.name), weights: candidates.map(\.weight), size: options.maglevTableSize)
    }

    public func pick(_ key: PickKey) -> Backend? {
        guard !table.isEmpty else { return nil }
        return backends[Int(table[StableHash.reduce(key.hash, into: table.count)])]
    }

    /// The lookup table for backends with these names and weights. `size` should be a prime well above
    /// the number of backends (the paper uses M ≥ 100·N); a size that is not larger than the count is
    /// raised to the next prime above it so the build always terminates.
    public static func buildTable(names: [String], weights: [Int], size requestedSize: Int) -> [Int32] {
        let count = names.count
        guard count > 0 else { return [] }
        let size =
            requestedSize > count && isPrime(requestedSize)
            ? requestedSize : nextPrime(above: max(count, requestedSize))
        var position = [Int](repeating: 0, count: count)
        var skip = [Int](repeating: 0, count: count)
        for (i, name) in names.enumerated() {
            position[i] = Int(StableHash.hash(name, seed: 0x6d61_676c_6576_0001) % UInt64(size))
            skip[i] = Int(StableHash.hash(name, seed: 0x6d61_676c_6576_0002) % UInt64(size - 1)) + 1
        }
        let normalised = SmoothWeightedSequence.normalise(weights)
        let heaviest = normalised.max() ?? 1
        var credit = [Int](repeating: 0, count: count)
        var table = [Int32](repeating: -1, count: size)
        var filled = 0
        table.withUnsafeMutableBufferPointer { slots in
            while filled < size {
                for i in 0..<count {
                    credit[i] += normalised[i]
                    while credit[i] >= heaviest && filled < size {
                        credit[i] -= heaviest
                        var slot = position[i]
                        while slots[slot] >= 0 {
                            slot += skip[i]
                            if slot >= size { slot -= size }
                        }
                        slots[slot] = Int32(i)
                        slot += skip[i]
                        position[i] = slot >= size ? slot - size : slot
                        filled += 1
                    }
                }
            }
        }
        return table
    }

    /// Whether `n` is prime (table sizes must be; the config checks with this same function).
    public static func isPrime(_ n: Int) -> Bool {
        guard n >= 2 else { return false }
        if n < 4 { return true }
        if n % 2 == 0 { return false }
        var d = 3
        while d * d <= n {
            if n % d == 0 { return false }
            d += 2
        }
        return true
    }

    static func nextPrime(above n: Int) -> Int {
        var candidate = n + 1
        while !isPrime(candidate) { candidate += 1 }
        return candidate
    }
}
