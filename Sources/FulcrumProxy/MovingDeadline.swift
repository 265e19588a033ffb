import NIOCore
import NIOPosix

/// A timeout whose deadline moves on every request (idle, request headers, backend response):
/// moving it costs a store, not a scheduled-task insert and cancel. The deadlines of every connection
/// of an event loop share one scheduled task (`DeadlineScheduler`), so a new connection arms no timer
/// of its own either: a `Connection: close` request used to insert and cancel two or three tasks in
/// the loop's timer heap. Confined to one event loop.
final class MovingDeadline {
    fileprivate let scheduler: DeadlineScheduler
    /// Dropped by `cancel()`, which breaks the owner → deadline → action → owner cycle. (A weak
    /// capture would give the owner a side table and slow every retain and release of it.)
    private var action: (() -> Void)?
    fileprivate var deadline: NIODeadline?
    /// Position in the scheduler's list while registered, -1 otherwise.
    fileprivate var slot = -1

    /// `action` runs on the event loop when the deadline passes. It may capture its owner strongly:
    /// the owner calls `cancel()` when it goes away (channel inactive or handler removed).
    init(eventLoop: any EventLoop, action: @escaping () -> Void) {
        self.scheduler = DeadlineScheduler.current(on: eventLoop)
        self.action = action
    }

    var isSet: Bool { deadline != nil }

    /// Fires `action` after `amount` unless moved or cleared first.
    func set(in amount: TimeAmount) {
        guard action != nil else { return }  // cancelled: the owner is gone
        let newDeadline = scheduler.eventLoop.now + amount
        deadline = newDeadline
        if slot < 0 { scheduler.register(self) }
        scheduler.due(at: newDeadline)
    }

    /// No deadline; the shared task finds nothing due here when it fires.
    func clear() {
        deadline = nil
    }

    /// No deadline and no action, and out of the scheduler's list: the owner is going away.
    func cancel() {
        action = nil
        deadline = nil
        if slot >= 0 { scheduler.unregister(self) }
    }

    /// Called by the scheduler when `deadline` has passed.
    fileprivate func fire() {
        deadline = nil
        action?()
    }
}

/// The one timer of an event loop for all its `MovingDeadline`s: a scheduled task armed for the
/// earliest deadline known when it was armed. Deadlines that move later cost nothing; when the task
/// fires it walks the registered deadlines, fires the due ones and re-arms for the earliest of the rest,
/// at least `minimumGap` ahead so that many staggered idle deadlines cost a bounded number of walks
/// (a deadline fires at most that much late). Thread-local because an event loop is a thread.
final class DeadlineScheduler {
    let eventLoop: any EventLoop
    private var members: [MovingDeadline] = []
    private var task: Scheduled<Void>?
    private var armedFor: NIODeadline?
    /// Bounds the walks per second; far below every configurable timeout's precision that matters.
    static let minimumGap = TimeAmount.milliseconds(10)

    private init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    private static let perThread = ThreadSpecificVariable<NIOLoopBoundBox<DeadlineScheduler>>()

    /// The scheduler of the current event loop (created on first use).
    static func current(on eventLoop: any EventLoop) -> DeadlineScheduler {
        eventLoop.preconditionInEventLoop()
        if let box = perThread.currentValue, box.value.eventLoop === eventLoop {
            return box.value
        }
        // A previous scheduler of this thread (another, e.g. embedded, loop) lives on through its members.
        let scheduler = DeadlineScheduler(eventLoop: eventLoop)
        perThread.currentValue = NIOLoopBoundBox(scheduler, eventLoop: eventLoop)
        return scheduler
    }

    /// Registered deadlines (tests).
    var count: Int { members.count }

    fileprivate func register(_ deadline: MovingDeadline) {
        deadline.slot = members.count
        members.append(deadline)
    }

    fileprivate func unregister(_ deadline: MovingDeadline) {
        let slot = deadline.slot
        deadline.slot = -1
        let last = members.removeLast()
        if last !== deadline {
            members[slot] = last
            last.slot = slot
        }
    }

    /// Some deadline is due at `at`: make sure the task fires no later.
    fileprivate func due(at: NIODeadline) {
        if let armedFor, armedFor <= at { return }
        task?.cancel()
        armedFor = at
        task = eventLoop.assumeIsolated().scheduleTask(deadline: at) { [self] in fired() }
    }

    private func fired() {
        armedFor = nil
        task = nil
        let now = eventLoop.now
        var next: NIODeadline?
        var passed: [MovingDeadline] = []
        for member in members {
            guard let deadline = member.deadline else { continue }
            if deadline <= now {
                passed.append(member)
            } else if next.map({ deadline < $0 }) ?? true {
                next = deadline
            }
        }
        // Actions may set, clear or cancel any deadline (their own or another connection's): check again.
        for member in passed {
            if let deadline = member.deadline, deadline <= now { member.fire() }
        }
        if let next { due(at: max(next, now + Self.minimumGap)) }
    }
}

@available(*, unavailable)
extension MovingDeadline: Sendable {}

@available(*, unavailable)
extension DeadlineScheduler: Sendable {}
