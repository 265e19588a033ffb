import NIOCore
import NIOEmbedded
import Testing

@testable import FulcrumProxy

@Suite("MovingDeadline")
struct MovingDeadlineTests {
    /// Counts how often the action ran.
    final class Counter {
        var fired = 0
    }

    @Test("moving the deadline later fires once, at the last deadline, with one armed task")
    func movesLater() {
        let loop = EmbeddedEventLoop()
        let counter = Counter()
        let deadline = MovingDeadline(eventLoop: loop) { counter.fired += 1 }
        deadline.set(in: .seconds(10))
        for _ in 0..<5 {
            loop.advanceTime(by: .seconds(4))
            deadline.set(in: .seconds(10))  // a request came in: the idle time starts again
        }
        #expect(counter.fired == 0)
        loop.advanceTime(by: .seconds(9))
        #expect(counter.fired == 0)
        loop.advanceTime(by: .seconds(1))
        #expect(counter.fired == 1)
        loop.advanceTime(by: .seconds(60))
        #expect(counter.fired == 1)
    }

    @Test("an earlier deadline re-arms; clear and cancel stop it")
    func earlierClearCancel() {
        let loop = EmbeddedEventLoop()
        let counter = Counter()
        let deadline = MovingDeadline(eventLoop: loop) { counter.fired += 1 }
        deadline.set(in: .seconds(60))
        deadline.set(in: .seconds(1))
        loop.advanceTime(by: .seconds(1))
        #expect(counter.fired == 1)
        deadline.set(in: .seconds(5))
        deadline.clear()
        loop.advanceTime(by: .seconds(10))
        #expect(counter.fired == 1)
        #expect(!deadline.isSet)
        deadline.set(in: .seconds(5))
        deadline.cancel()
        loop.advanceTime(by: .seconds(10))
        #expect(counter.fired == 1)
    }

    @Test("deadlines of one loop share its scheduler: each fires at its own time, cancel unregisters")
    func shared() {
        let loop = EmbeddedEventLoop()
        let counters = (0..<3).map { _ in Counter() }
        let deadlines = counters.map { counter in MovingDeadline(eventLoop: loop) { counter.fired += 1 } }
        let scheduler = DeadlineScheduler.current(on: loop)
        let registered = scheduler.count
        deadlines[0].set(in: .seconds(3))
        deadlines[1].set(in: .seconds(1))
        deadlines[2].set(in: .seconds(2))
        #expect(scheduler.count == registered + 3)
        loop.advanceTime(by: .seconds(1))
        #expect(counters.map(\.fired) == [0, 1, 0])
        loop.advanceTime(by: .seconds(1))
        #expect(counters.map(\.fired) == [0, 1, 1])
        deadlines[0].cancel()
        #expect(scheduler.count == registered + 2)
        loop.advanceTime(by: .seconds(5))
        #expect(counters.map(\.fired) == [0, 1, 1])
        deadlines[1].cancel()
        deadlines[2].cancel()
        #expect(scheduler.count == registered)
    }

    @Test("an action that cancels another due deadline keeps it from firing")
    func actionCancelsAnother() {
        let loop = EmbeddedEventLoop()
        let counter = Counter()
        var second: MovingDeadline?
        let first = MovingDeadline(eventLoop: loop) {
            counter.fired += 1
            second?.cancel()
        }
        second = MovingDeadline(eventLoop: loop) { counter.fired += 10 }
        first.set(in: .seconds(1))
        second?.set(in: .seconds(1))
        loop.advanceTime(by: .seconds(2))
        #expect(counter.fired == 1)
        first.cancel()
    }
}
