/// Slow start (HAProxy `slowstart`, nginx `slow_start`): a backend that returns to service receives a
/// growing share of new traffic, its effective weight rising linearly from 1/16 of its weight to all
/// of it over the window, so a cold cache or JIT is not flooded at once.
public enum SlowStart {
    /// Effective weight `since` nanoseconds after the backend came back (nil: not ramping).
    public static func effectiveWeight(weight: Int, since: UInt64?, now: UInt64, window: UInt64) -> Int {
        guard let since, window > 0, now < since &+ window, now >= since else { return weight }
        let elapsed = now - since
        let ramped = Int((UInt64(weight) * max(elapsed, 1) + window - 1) / window)
        return max(1, min(weight, max(ramped, weight / WeightScale.factor)))
    }
}

extension Duration {
    /// Whole nanoseconds (negative durations count as zero); the pure core's unit of time.
    public var nanoseconds: UInt64 {
        let (seconds, attoseconds) = components
        guard seconds >= 0 else { return 0 }
        return UInt64(seconds) &* 1_000_000_000 &+ UInt64(max(0, attoseconds) / 1_000_000_000)
    }
}
