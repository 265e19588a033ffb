@testable import FulcrumCore

/// `10.0.0.(i+1):80` for i in 0..<count.
func endpoints(_ count: Int, port: UInt16 = 80) -> [Endpoint] {
    (0..<count).map { Endpoint(address: .v4(0x0A00_0000 + UInt32($0 + 1)), port: port) }
}

func specs(_ weights: [Int], backups: Set<Int> = []) -> [BackendSpec] {
    zip(endpoints(weights.count), weights).enumerated().map { i, pair in
        BackendSpec(endpoint: pair.0, weight: pair.1, backup: backups.contains(i))
    }
}

func makePool(
    _ kind: AlgorithmKind, weights: [Int], backups: Set<Int> = [], health: HealthSettings? = nil,
    outlier: OutlierSettings? = nil, slowStart: UInt64 = 0, options: AlgorithmOptions = AlgorithmOptions()
) throws -> Pool {
    try Pool(
        name: "test",
        settings: PoolSettings(
            algorithm: kind, options: options, health: health, outlier: outlier,
            slowStartNanos: slowStart),
        backends: specs(weights, backups: backups), now: 1)
}

/// A deterministic key stream (SplitMix64), so distribution tests do not depend on luck.
struct KeyStream {
    var state: UInt64
    init(seed: UInt64 = 42) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        return StableHash.fmix64(state)
    }
}

/// Picks `count` times (with fresh keys) and counts picks per endpoint.
func distribution(_ snapshot: PoolSnapshot, picks count: Int, seed: UInt64 = 42) -> [Endpoint: Int] {
    var keys = KeyStream(seed: seed)
    var counts: [Endpoint: Int] = [:]
    for _ in 0..<count {
        if let backend = snapshot.pick(PickKey(hash: keys.next(), now: 1)) {
            counts[backend.endpoint, default: 0] += 1
        }
    }
    return counts
}
