import FulcrumPacket
import Testing

@Suite struct FlowTableTests {
    static let second: UInt64 = 1_000_000_000

    func key(_ n: Int, proto: UInt8 = 6) -> FlowKey {
        FlowKey(
            source: 0x0A00_0000 | UInt32(n), destination: TestPackets.vip, sourcePort: UInt16(1024 + n % 60000),
            destinationPort: 80, proto: proto)
    }

    @Test func tcpStatesHaveTheirOwnTimeouts() {
        var timeouts = FlowTimeouts()
        timeouts.syn = 5 * Self.second
        timeouts.established = 100 * Self.second
        timeouts.closing = 20 * Self.second
        timeouts.closed = 2 * Self.second
        let table = FlowTable<Int>(capacity: 16, timeouts: timeouts)
        let s = Self.second

        // Half-open: expires after the SYN timeout.
        let a = table.insert(key(1), value: 1, state: .synSent, now: 0)
        #expect(table.state(a) == .synSent)
        #expect(table.lookup(key(1), now: 4 * s) != nil)
        #expect(table.lookup(key(1), now: 5 * s) == nil)

        // Established survives long idle periods, and each packet restarts the clock.
        let b = table.insert(key(2), value: 2, state: .synSent, now: 0)
        table.touch(b, tcpFlags: TCPFlags.ack, isTCP: true, now: 1 * s)
        #expect(table.state(b) == .established)
        #expect(table.lookup(key(2), now: 100 * s) != nil)
        table.touch(b, tcpFlags: TCPFlags.ack, isTCP: true, now: 100 * s)
        #expect(table.lookup(key(2), now: 199 * s) != nil)

        // FIN: closing timeout; then a RST: closed.
        table.touch(b, tcpFlags: TCPFlags.ack | TCPFlags.fin, isTCP: true, now: 200 * s)
        #expect(table.state(b) == .closing)
        #expect(table.lookup(key(2), now: 219 * s) != nil)
        table.touch(b, tcpFlags: TCPFlags.rst, isTCP: true, now: 219 * s)
        #expect(table.state(b) == .closed)
        #expect(table.lookup(key(2), now: 221 * s) == nil)
        #expect(table.counters.expired == 2)
        #expect(table.count == 0)
    }

    @Test func stateTransitions() {
        typealias T = FlowTable<Int>
        #expect(T.advance(.datagram, tcpFlags: TCPFlags.syn) == .synSent)
        #expect(T.advance(.synSent, tcpFlags: TCPFlags.syn) == .synSent)
        #expect(T.advance(.synSent, tcpFlags: TCPFlags.ack) == .established)
        #expect(T.advance(.established, tcpFlags: TCPFlags.ack | TCPFlags.fin) == .closing)
        #expect(T.advance(.closing, tcpFlags: TCPFlags.ack) == .closing)
        #expect(T.advance(.established, tcpFlags: TCPFlags.rst) == .closed)
        #expect(T.advance(.closed, tcpFlags: TCPFlags.ack) == .closed)
    }

    @Test func evictsTheLeastRecentlyUsedWhenFull() {
        let table = FlowTable<Int>(capacity: 3)
        var removed: [Int] = []
        table.onRemove = { removed.append($0) }
        let s1 = table.insert(key(1), value: 1, state: .established, now: 1)
        table.insert(key(2), value: 2, state: .established, now: 2)
        table.insert(key(3), value: 3, state: .established, now: 3)
        table.touch(s1, tcpFlags: TCPFlags.ack, isTCP: true, now: 4)  // 1 is now the most recent
        table.insert(key(4), value: 4, state: .established, now: 5)  // evicts 2
        #expect(removed == [2])
        #expect(table.count == 3)
        #expect(table.lookup(key(2), now: 6) == nil)
        #expect(table.lookup(key(1), now: 6) != nil)
        #expect(table.counters.evicted == 1 && table.counters.created == 4)
        for n in 5..<1000 { table.insert(key(n), value: n, state: .established, now: UInt64(n)) }
        #expect(table.count == 3)
        #expect(table.counters.evicted == 996)  // 1 + one per insert beyond capacity
    }

    @Test func findsAFlowByItsReverseKey() throws {
        let table = FlowTable<String>(capacity: 4)
        let forward = key(1)
        let reverse = FlowKey(
            source: 0x0A00_000B, destination: TestPackets.snat, sourcePort: 8080, destinationPort: 20000, proto: 6)
        table.insert(forward, reverseKey: reverse, value: "m", state: .synSent, now: 0)
        let f = try #require(table.lookup(forward, now: 1))
        let r = try #require(table.lookup(reverse, now: 1))
        #expect(f.slot == r.slot && !f.isReverse && r.isReverse)
        table.remove(f.slot)
        #expect(table.lookup(reverse, now: 1) == nil)
        #expect(table.counters.removed == 1)
    }

    @Test func sweepRemovesExpiredFlowsOldestFirst() {
        var timeouts = FlowTimeouts()
        timeouts.datagram = 10
        timeouts.established = 100
        let table = FlowTable<Int>(capacity: 100, timeouts: timeouts)
        var removed: [Int] = []
        table.onRemove = { removed.append($0) }
        for n in 0..<50 { table.insert(key(n, proto: 17), value: n, state: .datagram, now: UInt64(n)) }
        table.insert(key(99), value: 99, state: .established, now: 0)
        #expect(table.sweep(now: 30, limit: 1000) == 21)  // datagrams seen at 0...20 are ≥ 10 old
        #expect(removed == Array(0...20))
        #expect(table.sweep(now: 1000, limit: 5) == 5)  // bounded work per call
        #expect(table.sweep(now: 1000, limit: 1000) == 25)
        #expect(table.count == 0)
    }

    @Test func clockGoingBackwardsExpiresNothing() {
        let table = FlowTable<Int>(capacity: 2)
        table.insert(key(1), value: 1, state: .synSent, now: 1_000 * Self.second)
        #expect(table.lookup(key(1), now: 0) != nil)
        #expect(table.sweep(now: 0, limit: 10) == 0)
    }
}
