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
}
