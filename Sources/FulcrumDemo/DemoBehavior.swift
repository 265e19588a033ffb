/// How a ``DemoBackend`` behaves: how slow its answers are, and whether and when it fails health checks.
public struct DemoBehavior: Sendable, Hashable {
    /// Delay before `GET /` (and every path without its own route) is answered; scheduled on the event loop.
    public var latency: Duration
    /// When set, `/healthz` follows this schedule (healthy for `up`, then unhealthy for `down`, repeating).
    public var flaky: FlakySchedule?
    /// Fraction (0...1) of `GET /` requests answered `500`, spread evenly and deterministically: with 0.25,
    /// every fourth request fails. Useful to show outlier ejection.
    public var errorRate: Double

    public init(latency: Duration = .zero, flaky: FlakySchedule? = nil, errorRate: Double = 0) {
        self.latency = latency
        self.flaky = flaky
        self.errorRate = min(max(errorRate, 0), 1)
    }

    /// Answers at once, always healthy, never fails.
    public static let `default` = DemoBehavior()
}

/// A repeating health schedule: healthy for `up`, then unhealthy for `down`, starting when the backend starts.
public struct FlakySchedule: Sendable, Hashable {
    public var up: Duration
    public var down: Duration

    public init(up: Duration, down: Duration) {
        precondition(up >= .zero && down >= .zero && up + down > .zero, "FlakySchedule needs a positive period")
        self.up = up
        self.down = down
    }

    /// Whether the schedule is in its healthy phase `elapsed` after it started.
    public func isHealthy(after elapsed: Duration) -> Bool {
        let period = Self.nanoseconds(self.up + self.down)
        let phase = Self.nanoseconds(max(elapsed, .zero)) % period
        return phase < Self.nanoseconds(self.up)
    }

    private static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
