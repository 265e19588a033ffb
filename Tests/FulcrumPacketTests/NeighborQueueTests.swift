import FulcrumCore
import FulcrumPacket
import Testing

/// DSR frames waiting for a backend's MAC: kept (bounded), released when the MAC is learned, aged out otherwise.
@Suite struct NeighborQueueTests {
    @Test func firstFrameAsksLaterOnesWaitAndReleaseKeepsOrder() {
        var queue = NeighborQueue(perAddress: 3, total: 4, maximumAge: 1_000)
        let first = queue.enqueue([1], for: 11, now: 0)
        let second = queue.enqueue([2], for: 11, now: 1)
        let other = queue.enqueue([3], for: 12, now: 2)
        #expect(first, "the first frame for an address asks for it")
        #expect(!second && other)
        #expect(queue.count == 3 && Set(queue.addresses) == [11, 12])
        let released = queue.release(11)
        let again = queue.release(11)
        #expect(released == [[1], [2]])
        #expect(again.isEmpty && queue.count == 1)
        let afterRelease = queue.enqueue([4], for: 11, now: 3)
        #expect(afterRelease, "asks again once the address has nothing waiting")
    }

    @Test func boundedPerAddressAndInTotal() {
        var queue = NeighborQueue(perAddress: 2, total: 3, maximumAge: 1_000)
        queue.enqueue([1], for: 11, now: 0)
        queue.enqueue([2], for: 11, now: 0)
        queue.enqueue([3], for: 11, now: 0)
        #expect(queue.count == 2 && queue.dropped == 1, "per-address bound")
        queue.enqueue([4], for: 12, now: 0)
        queue.enqueue([5], for: 13, now: 0)
        #expect(queue.count == 3 && queue.dropped == 2, "total bound")
    }

    @Test func framesWithoutAnAnswerAgeOut() {
        var queue = NeighborQueue(perAddress: 8, total: 8, maximumAge: 100)
        queue.enqueue([1], for: 11, now: 0)
        queue.enqueue([2], for: 11, now: 60)
        queue.expire(now: 99)
        #expect(queue.count == 2)
        queue.expire(now: 100)
        #expect(queue.count == 1 && queue.dropped == 1)
        queue.expire(now: 200)
        #expect(queue.count == 0 && queue.addresses.isEmpty && queue.dropped == 2)
    }

    @Test func dsrNamesTheBackendWhoseMACIsMissing() throws {
        let snapshot = try TestPackets.pool(port: 80).snapshot()
        let dsr = DSRForwarder(
            settings: FrameServiceSettings(
                service: VirtualServiceAddress(vip: TestPackets.vip, port: 80, proto: 6), localMAC: TestPackets.lbMAC))
        var frame = TestPackets.ethernet() + TestPackets.ipv4(sport: 40001, payload: [1])
        let verdict = frame.withPacket { p in
            dsr.process(p, frameStart: 0, length: p.count, snapshot: snapshot, now: 1) { _ in nil }
        }
        #expect(verdict == .drop(.noNeighbor))
        let key = FlowKey(
            source: TestPackets.client, destination: TestPackets.vip, sourcePort: 40001, destinationPort: 80, proto: 6)
        #expect(dsr.unresolvedBackend == snapshot.pick(flow: key, now: 0)?.ipv4)
    }
}
