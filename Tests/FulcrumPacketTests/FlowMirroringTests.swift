import FulcrumCore
import FulcrumPacket
import Testing

/// HA mirroring: the active node's flows, recorded as `FlowRecord`s and installed on a standby, keep their
/// backend (and NAT its SNAT port) even where the standby's own selector would pick another backend.
@Suite struct FlowMirroringTests {
    static let macs: [UInt32: MACAddress] = [
        TestPackets.ip("10.200.0.11"): MACAddress(2, 0, 0, 0, 0, 0x11),
        TestPackets.ip("10.200.0.12"): MACAddress(2, 0, 0, 0, 0, 0x12),
        TestPackets.ip("10.200.0.13"): MACAddress(2, 0, 0, 0, 0, 0x13),
        TestPackets.ip("10.200.0.14"): MACAddress(2, 0, 0, 0, 0, 0x14),
    ]
    static let three = ["10.200.0.11", "10.200.0.12", "10.200.0.13"]
    /// The standby's pool has a fourth backend, so its Maglev table sends some flows elsewhere.
    static let four = three + ["10.200.0.14"]
    let settings = FrameServiceSettings(
        service: VirtualServiceAddress(vip: TestPackets.vip, port: 80, proto: 6), localMAC: TestPackets.lbMAC)

    func key(_ port: UInt16) -> FlowKey {
        FlowKey(
            source: TestPackets.client, destination: TestPackets.vip, sourcePort: port, destinationPort: 80, proto: 6)
    }

    /// Sends one frame through `dsr`; the destination MAC it left with.
    func send(_ dsr: DSRForwarder, port: UInt16, flags: UInt8, snapshot: PoolSnapshot, now: UInt64) -> [UInt8] {
        var frame = TestPackets.ethernet() + TestPackets.ipv4(sport: port, flags: flags, payload: [1])
        _ = frame.withPacket { p in
            dsr.process(p, frameStart: 0, length: p.count, snapshot: snapshot, now: now) { Self.macs[$0] }
        }
        return Array(frame[0..<6])
    }

    @Test func dsrFlowsKeepTheirBackendOnTheStandby() throws {
        let active = DSRForwarder(settings: settings)
        let log = FlowChangeLog()
        active.pinning.recordChanges(into: log)
        let activeSnapshot = try TestPackets.pool(Self.three, port: 80).snapshot()
        let ports = Array(UInt16(40000)..<40040)
        for port in ports { _ = send(active, port: port, flags: TCPFlags.syn, snapshot: activeSnapshot, now: 1_000) }
        let changes = log.take()
        #expect(changes.added.count == ports.count && changes.removed.isEmpty)
        let records = active.pinning.flowRecords(now: 3_000)
        #expect(
            Set(records)
                == Set(
                    changes.added.map {
                        var r = $0; r.ageNanos = 2_000; return r
                    }))
        for record in records {
            #expect(record.backend == activeSnapshot.pick(flow: record.key, now: 0)?.endpoint)
            #expect(record.state == .synSent && record.snatPort == nil)
        }

        let standby = DSRForwarder(settings: settings)
        let standbyLog = FlowChangeLog()
        standby.pinning.recordChanges(into: standbyLog)
        let standbySnapshot = try TestPackets.pool(Self.four, port: 80).snapshot()
        let wouldMove = records.filter { standbySnapshot.pick(flow: $0.key, now: 0)?.endpoint != $0.backend }
        #expect(!wouldMove.isEmpty, "the standby's own choice differs for some flows, so the test can fail")
        #expect(standby.pinning.installMirrored(records, snapshot: standbySnapshot, now: 10_000) == 0)
        #expect(standbyLog.take().isEmpty, "installed flows are not echoed back into the feed")
        #expect(standby.pinning.flows.count == ports.count)
        for record in records {
            let mac = send(
                standby, port: record.key.sourcePort, flags: TCPFlags.ack, snapshot: standbySnapshot, now: 11_000)
            guard case .v4(let address) = record.backend.address else { continue }
            #expect(mac == Self.macs[address]!.array, "\(record.key) stays on \(record.backend)")
        }
        // Installing again is refused (already present); an unknown backend is refused too.
        var stranger = records[0]
        stranger.key.sourcePort = 50000
        stranger.backend = Endpoint(address: IPAddress("10.9.9.9")!, port: 80)
        #expect(standby.pinning.installMirrored([records[0], stranger], snapshot: standbySnapshot, now: 12_000) == 2)

        // Removals mirror too.
        standby.pinning.removeMirrored(records.prefix(10).map(\.key), now: 13_000)
        #expect(standby.pinning.flows.count == ports.count - 10)
        #expect(standbyLog.take().isEmpty)
    }

    @Test func expiredAndRemovedFlowsAreRecorded() throws {
        let active = DSRForwarder(settings: settings)
        let log = FlowChangeLog()
        active.pinning.recordChanges(into: log)
        let snapshot = try TestPackets.pool(Self.three, port: 80).snapshot()
        for port in UInt16(40000)..<40005 {
            _ = send(active, port: port, flags: TCPFlags.syn, snapshot: snapshot, now: 1)
        }
        _ = log.take()
        active.pinning.flows.sweep(now: 1 + FlowTimeouts().syn, limit: 100)
        #expect(Set(log.take().removed) == Set((UInt16(40000)..<40005).map(key)))
    }

    @Test func natFlowsKeepBackendAndSNATPortOnTheStandby() throws {
        let service = VirtualServiceAddress(vip: TestPackets.vip, port: 80, proto: IPProtocolNumber.tcp)
        let natSettings = NATSettings(service: service, snatAddress: TestPackets.snat, snatPorts: 20000...20100)
        let active = NATRewriter(settings: natSettings)
        let log = FlowChangeLog()
        active.recordChanges(into: log)
        let activeSnapshot = try TestPackets.pool(Self.three).snapshot()
        for port in UInt16(40000)..<40030 {
            var syn = TestPackets.ipv4(sport: port, flags: TCPFlags.syn)
            let n = syn.count
            _ = syn.withPacket { active.process($0, start: 0, length: n, snapshot: activeSnapshot, now: 1) }
        }
        let records = log.take().added
        #expect(records.count == 30 && records.allSatisfy { $0.snatPort != nil })

        let standby = NATRewriter(settings: natSettings)
        let standbySnapshot = try TestPackets.pool(Self.four).snapshot()
        #expect(records.contains { standbySnapshot.pick(flow: $0.key, now: 0)?.endpoint != $0.backend })
        #expect(standby.installMirrored(records, snapshot: standbySnapshot, now: 5) == 0)
        for record in records {
            guard case .v4(let backendAddress) = record.backend.address, let snatPort = record.snatPort else {
                continue
            }
            // The backend's reply to the mirrored SNAT port reaches the client…
            var reply = TestPackets.ipv4(
                src: backendAddress, dst: TestPackets.snat, sport: record.backend.port, dport: snatPort,
                flags: TCPFlags.ack, payload: [7])
            let n = reply.count
            let verdict = reply.withPacket {
                standby.process($0, start: 0, length: n, snapshot: standbySnapshot, now: 6)
            }
            #expect(verdict == .forward(0..<n))
            #expect(TestPackets.read32(reply, 16) == TestPackets.client)
            #expect(TestPackets.read16(reply, 22) == record.key.sourcePort)
            // …and the client's next segment leaves with the same SNAT port to the same backend.
            var ack = TestPackets.ipv4(sport: record.key.sourcePort, flags: TCPFlags.ack, payload: [8])
            let m = ack.count
            _ = ack.withPacket { standby.process($0, start: 0, length: m, snapshot: standbySnapshot, now: 7) }
            #expect(TestPackets.read16(ack, 20) == snatPort && TestPackets.read32(ack, 16) == backendAddress)
        }
        // A new flow on the standby never gets a port a mirrored flow holds.
        var fresh = TestPackets.ipv4(sport: 45000, flags: TCPFlags.syn)
        let n = fresh.count
        _ = fresh.withPacket { standby.process($0, start: 0, length: n, snapshot: standbySnapshot, now: 8) }
        #expect(!records.compactMap(\.snatPort).contains(TestPackets.read16(fresh, 20)))
        // A record whose port is taken is refused.
        var clash = records[0]
        clash.key.sourcePort = 46000
        #expect(standby.installMirrored([clash], snapshot: standbySnapshot, now: 9) == 1)
    }

    @Test func portPoolClaimsAGivenPort() {
        var pool = PortPool(100...104)
        let first = pool.claim(102)
        let again = pool.claim(102)
        let below = pool.claim(99)
        let above = pool.claim(105)
        #expect(first)
        #expect(!again, "in use")
        #expect(!below && !above, "outside the range")
        var allocated: [UInt16] = []
        while let port = pool.allocate() { allocated.append(port) }
        #expect(allocated.sorted() == [100, 101, 103, 104])
        pool.release(102)
        let reclaimed = pool.claim(102)
        #expect(reclaimed)
        pool.release(101)
        #expect(pool.allocate() == 101)
    }

    @Test func changeFeedIsBoundedAndAsksForAResync() {
        let feed = FlowChangeFeed(capacity: 5)
        let record = FlowRecord(
            key: key(1), backend: Endpoint(address: IPAddress("10.200.0.11")!, port: 80), state: .established,
            ageNanos: 0)
        #expect(feed.publish(FlowChanges(added: [record, record], removed: [key(2)])))
        #expect(!feed.publish(FlowChanges(added: [record, record, record])), "beyond capacity: dropped")
        let first = feed.drain()
        #expect(first.added.count == 2 && first.removed == [key(2)] && first.resyncNeeded)
        #expect(feed.drain() == FlowChanges())
    }
}
