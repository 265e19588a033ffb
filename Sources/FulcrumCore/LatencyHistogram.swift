import Synchronization

/// A lock-free latency histogram: log-spaced buckets (4 per doubling, from 1 µs to about 16 s), one
/// relaxed atomic add per sample. Quantiles are estimated within one bucket (±10 %); good enough for
/// p50/p99 displays and Prometheus buckets without a lock on the data path.
public final class LatencyHistogram: Sendable {
    public static let bucketCount = 96
    private static let subBuckets = 4
    private let counts: InlineArray<96, Atomic<UInt64>>
    private let totalNanos = Atomic<UInt64>(0)

    public init() {
        counts = InlineArray { _ in Atomic(0) }
    }

    /// The bucket of a latency: 0 holds ≤ 1 µs, then four buckets per doubling.
    public static func bucket(forNanos nanos: UInt64) -> Int {
        let micros = nanos / 1_000
        guard micros > 1 else { return 0 }
        let octave = 63 - micros.leadingZeroBitCount  // floor(log2)
        let fraction = octave >= 2 ? Int((micros >> UInt64(octave - 2)) & 3) : Int((micros << UInt64(2 - octave)) & 3)
        return min(bucketCount - 1, 1 + octave * subBuckets + fraction)
    }

    /// Upper bound of a bucket in nanoseconds (what a quantile in it is reported as).
    public static func upperBoundNanos(ofBucket bucket: Int) -> UInt64 {
        guard bucket > 0 else { return 1_000 }
        let octave = (bucket - 1) / subBuckets
        let fraction = UInt64((bucket - 1) % subBuckets)
        // Bucket covers [2^o·(1 + f/4), 2^o·(1 + (f+1)/4)) microseconds.
        return (UInt64(1) << UInt64(octave)) * 1_000 * (5 + fraction) / 4
    }

    public func record(nanos: UInt64) {
        counts[Self.bucket(forNanos: nanos)].wrappingAdd(1, ordering: .relaxed)
        totalNanos.wrappingAdd(nanos, ordering: .relaxed)
    }

    /// A point-in-time copy of the bucket counts.
    public func snapshot() -> [UInt64] {
        (0..<Self.bucketCount).map { counts[$0].load(ordering: .relaxed) }
    }

    public var count: UInt64 { snapshot().reduce(0, +) }
    public var sumNanos: UInt64 { totalNanos.load(ordering: .relaxed) }

    /// The q-quantile (0...1) in nanoseconds, or nil before the first sample.
    public func quantile(_ q: Double) -> UInt64? {
        Self.quantile(q, of: snapshot())
    }

    public static func quantile(_ q: Double, of buckets: [UInt64]) -> UInt64? {
        let total = buckets.reduce(0, +)
        guard total > 0 else { return nil }
        let rank = max(1, UInt64((Double(total) * min(max(q, 0), 1)).rounded(.up)))
        var seen: UInt64 = 0
        for (index, count) in buckets.enumerated() {
            seen += count
            if seen >= rank { return upperBoundNanos(ofBucket: index) }
        }
        return upperBoundNanos(ofBucket: buckets.count - 1)
    }
}
