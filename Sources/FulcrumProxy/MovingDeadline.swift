import NIOCore

/// A timeout whose deadline moves on every request (idle, request headers, backend response):
/// moving it costs a store, not a scheduled-task insert and cancel. One task is armed at a time; when
/// it fires before the current deadline it re-arms for the rest, so a busy keep-alive connection
/// touches the event loop's timer heap about once per timeout period instead of several times per
/// request. Confined to one event loop.
final class MovingDeadline {
    private let eventLoop: any EventLoop
    /// Dropped by `cancel()`, which breaks the owner → deadline → action → owner cycle. (A weak
    /// capture would give the owner a side table and slow every retain and release of it.)
    private var action: (() -> Void)?
    private var deadline: NIODeadline?
    private var armedFor: NIODeadline?
    private var task: Scheduled<Void>?

    /// `action` runs on the event loop when the deadline passes. It may capture its owner strongly:
    /// the owner calls `cancel()` when it goes away (channel inactive or handler removed).
    init(eventLoop: any EventLoop, action: @escaping () -> Void) {
        self.eventLoop = eventLoop
        self.action = action
    }

    var isSet: Bool { deadline != nil }

    /// Fires `action` after `amount` unless moved or cleared first.
    func set(in amount: TimeAmount) {
        let newDeadline = eventLoop.now + amount
        deadline = newDeadline
        if let armedFor, armedFor <= newDeadline { return }  // fires first and re-arms for the rest
        task?.cancel()
        arm(newDeadline)
    }

    /// No deadline; an armed task finds nothing due when it fires.
    func clear() {
        deadline = nil
    }

    /// No deadline, no armed task and no action: the owner is going away.
    func cancel() {
        action = nil
        deadline = nil
        armedFor = nil
        task?.cancel()
        task = nil
    }

    private func arm(_ at: NIODeadline) {
        armedFor = at
        task = eventLoop.assumeIsolated().scheduleTask(deadline: at) { [self] in fired() }
    }

    private func fired() {
        armedFor = nil
        task = nil
        guard let deadline else { return }
        if deadline <= eventLoop.now {
            self.deadline = nil
            action?()
        } else {
            arm(deadline)
        }
    }
}

@available(*, unavailable)
extension MovingDeadline: Sendable {}
