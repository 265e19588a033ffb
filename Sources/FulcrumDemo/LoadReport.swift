/// What a ``LoadDriver`` run observed.
public struct LoadReport: Sendable, Hashable {
    /// Requests issued (succeeded + failed).
    public var requests: Int
    /// Responses with a 2xx status.
    public var succeeded: Int
    /// Every response received, by status code (2xx included).
    public var statusCounts: [Int: Int]
    /// Requests that got no complete response: connect failures, resets, closes and timeouts.
    public var errors: Int
    /// Responses (any status) by their `X-Backend` header; responses without it are not counted here.
    public var byBackend: [String: Int]
    /// Median latency of the responses received (zero when none).
    public var p50: Duration
    /// 99th percentile latency of the responses received (zero when none).
    public var p99: Duration
    /// Slowest response received (zero when none).
    public var max: Duration
    /// Wall time of the whole run.
    public var elapsed: Duration

    /// Requests that did not succeed: non-2xx responses plus ``errors``.
    public var failed: Int { self.requests - self.succeeded }
    /// Responses received that were not 2xx.
    public var non2xx: Int { self.statusCounts.filter { !(200..<300).contains($0.key) }.values.reduce(0, +) }

    public init(
        requests: Int = 0,
        succeeded: Int = 0,
        statusCounts: [Int: Int] = [:],
        errors: Int = 0,
        byBackend: [String: Int] = [:],
        p50: Duration = .zero,
        p99: Duration = .zero,
        max: Duration = .zero,
        elapsed: Duration = .zero
    ) {
        self.requests = requests
        self.succeeded = succeeded
        self.statusCounts = statusCounts
        self.errors = errors
        self.byBackend = byBackend
        self.p50 = p50
        self.p99 = p99
        self.max = max
        self.elapsed = elapsed
    }

    /// The nearest-rank percentile `fraction` (0...1) of `sorted`, which must be sorted ascending.
    static func percentile(_ fraction: Double, of sorted: [Duration]) -> Duration {
        guard !sorted.isEmpty else { return .zero }
        let rank = Int((fraction * Double(sorted.count)).rounded(.up))
        return sorted[Swift.min(Swift.max(rank, 1), sorted.count) - 1]
    }
}
