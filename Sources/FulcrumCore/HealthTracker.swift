/// Settings of the active health checks' rise/fall logic.
public struct HealthSettings: Sendable, Equatable {
    /// Consecutive successful checks that bring a down backend up.
    public var rise: Int
    /// Consecutive failed checks that take an up backend down.
    public var fall: Int

    public init(rise: Int = 2, fall: Int = 3) {
        self.rise = max(1, rise)
        self.fall = max(1, fall)
    }
}

/// The last active check of a backend, as shown to operators.
public struct ProbeResult: Sendable, Equatable {
    public var success: Bool
    /// Monotonic time of the check, nanoseconds.
    public var at: UInt64
    /// What happened ("connect refused", "status 503", "ok").
    public var detail: String

    public init(success: Bool, at: UInt64, detail: String) {
        self.success = success
        self.at = at
        self.detail = detail
    }
}

/// Rise/fall state of one backend's active checks (HAProxy's `rise`/`fall`): pure, time injected.
/// A single contrary result never flips the state; `fall` failures in a row take it down and
/// `rise` successes in a row bring it back.
public struct HealthTracker: Sendable, Equatable {
    public private(set) var isHealthy: Bool
    /// Results in a row that contradict the current state.
    public private(set) var streak: Int = 0
    public private(set) var lastResult: ProbeResult?
    /// When the state last changed (or the tracker was created).
    public private(set) var since: UInt64

    public init(healthy: Bool, now: UInt64) {
        isHealthy = healthy
        since = now
    }

    /// Records one check result; returns true when the state flipped.
    public mutating func record(
        success: Bool, settings: HealthSettings, at now: UInt64, detail: String = ""
    )
        -> Bool
    {
        lastResult = ProbeResult(success: success, at: now, detail: detail)
        guard success != isHealthy else {
            streak = 0
            return false
        }
        streak += 1
        guard streak >= (isHealthy ? settings.fall : settings.rise) else { return false }
        isHealthy = success
        streak = 0
        since = now
        return true
    }
}
