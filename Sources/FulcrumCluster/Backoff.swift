/// Bounded exponential backoff with jitter for reconnecting: `initial`, ×2 per failure, at most `maximum`;
/// each wait is drawn from the upper half of the current step so that nodes which lost etcd together do
/// not return together.
public struct Backoff: Sendable, Equatable {
    public var initial: Duration
    public var maximum: Duration
    private var step: Duration

    public init(initial: Duration = .milliseconds(100), maximum: Duration = .seconds(5)) {
        precondition(initial > .zero && maximum >= initial)
        self.initial = initial
        self.maximum = maximum
        self.step = initial
    }

    /// The wait before the next attempt; grows until `maximum`.
    public mutating func next() -> Duration {
        let wait = step * Double.random(in: 0.5...1.0)
        step = min(step * 2, maximum)
        return wait
    }

    /// After a success: start from `initial` again.
    public mutating func reset() { step = initial }
}
