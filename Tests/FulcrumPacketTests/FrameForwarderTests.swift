import FulcrumCore
import FulcrumPacket
import Testing

@Suite struct FrameForwarderTests {
    static let backendMACs: [UInt32: MACAddress] = [
        TestPackets.ip("10.200.0.11"): MACAddress(2, 0, 0, 0, 0, 0x11),
        TestPackets.ip("10.200.0.12"): MACAddress(2, 0, 0, 0, 0, 0x12),
        TestPackets.ip("10.200.0.13"): MACAddress(2, 0, 0, 0, 0, 0x13),
    ]
    let frameSettings = FrameServiceSettings(
        service: VirtualServiceAddress(vip: TestPackets.vip, port: 80, proto: 6), localMAC: TestPackets.lbMAC)

    // MARK: DSR

    @Test func dsrRewritesOnlyMACs() throws {
        let snapshot = try TestPackets.pool(port: 80).snapshot()
        let dsr = DSRForwarder(settings: frameSettings)
        let original = TestPackets.ethernet() + TestPackets.ipv4(payload: [1, 2, 3])
        var frame = original
        let verdict = frame.withPacket { p in
            dsr.process(p, frameStart: 0, length: p.count, snapshot: snapshot, now: 1) { Self.backendMACs[$0] }
        }
        #expect(verdict == .forward(0..<frame.count))
        let key = FlowKey(
            source: TestPackets.client, destination: TestPackets.vip, sourcePort: 40000, destinationPort: 80, proto: 6)
        let expected = try #require(snapshot.pick(flow: key, now: 0)?.ipv4)
        #expect(Array(frame[0..<6]) == Self.backendMACs[expected]!.array)
        #expect(Array(frame[6..<12]) == TestPackets.lbMAC.array)
        #expect(Array(frame[12...]) == Array(original[12...]))

        // Later packets of the flow go to the same backend even if the pool changes.
        let smaller = try TestPackets.pool(["10.200.0.11"], port: 80).snapshot()
        var next = TestPackets.ethernet() + TestPackets.ipv4(flags: TCPFlags.ack)
        _ = next.withPacket { p in
            dsr.process(p, frameStart: 0, length: p.count, snapshot: smaller, now: 2) { Self.backendMACs[$0] }
        }
        #expect(Array(next[0..<6]) == Self.backendMACs[expected]!.array)
    }

    @Test func dsrAnswersARPForTheVIPOnly() throws {
        let snapshot = try TestPackets.pool(port: 80).snapshot()
        let dsr = DSRForwarder(settings: frameSettings)
        var request = TestPackets.arpRequest(target: TestPackets.vip)
        let verdict = request.withPacket { p in
            dsr.process(p, frameStart: 0, length: p.count, snapshot: snapshot, now: 1) { _ in nil }
        }
        #expect(verdict == .reply(0..<42))
        #expect(TestPackets.read16(request, 20) == ARP.opReply)
        #expect(Array(request[22..<28]) == TestPackets.lbMAC.array)
        var other = TestPackets.arpRequest(target: TestPackets.lb)
        let otherVerdict = other.withPacket { p in
            dsr.process(p, frameStart: 0, length: p.count, snapshot: snapshot, now: 1) { _ in nil }
        }
        #expect(otherVerdict == .drop(.arpIgnored))
        var noNeighbor = TestPackets.ethernet() + TestPackets.ipv4()
        let v3 = noNeighbor.withPacket { p in
            dsr.process(p, frameStart: 0, length: p.count, snapshot: snapshot, now: 1) { _ in nil }
        }
        #expect(v3 == .drop(.noNeighbor))
        #expect(dsr.counters.arpReplies == 1 && dsr.drops[.arpIgnored] == 1 && dsr.drops[.noNeighbor] == 1)
    }

    // MARK: Tunnels

    let headroom = 64

    func tunnel(_ kind: TunnelSettings.Kind, mtu: Int = 1500) -> TunnelForwarder {
        TunnelForwarder(
            settings: TunnelSettings(frame: frameSettings, kind: kind, localAddress: TestPackets.lb, mtu: mtu))
    }

    func send(
        _ forwarder: TunnelForwarder, frame: [UInt8], offload: VirtioNetHeader? = nil, snapshot: PoolSnapshot
    ) -> (PacketVerdict, [[UInt8]]) {
        TestPackets.tunnelSend(forwarder, frame: frame, offload: offload, snapshot: snapshot, headroom: headroom)
    }

    @Test func ipipEncapsulatesToTheBackend() throws {
        let snapshot = try TestPackets.pool(port: 80).snapshot()
        let inner = TestPackets.ipv4(payload: Array("data".utf8), tos: 0x02)
        let (verdict, out) = send(tunnel(.ipip), frame: TestPackets.ethernet() + inner, snapshot: snapshot)
        #expect(verdict == .emitted(segments: 1))
        let packet = try #require(out.first)
        #expect(packet.count == inner.count + 20)
        #expect(packet[9] == 4 && packet[1] == 0x02)
        #expect(TestPackets.referenceChecksum(Array(packet[0..<20])) == 0)
        #expect(TestPackets.read32(packet, 12) == TestPackets.lb)
        let key = FlowKey(
            source: TestPackets.client, destination: TestPackets.vip, sourcePort: 40000, destinationPort: 80, proto: 6)
        #expect(TestPackets.read32(packet, 16) == snapshot.pick(flow: key, now: 0)?.ipv4)
        #expect(Array(packet[20...]) == inner)
        // What the user-space decapsulator does on the backend.
        var copy = packet
        let decapsulated = try copy.withPacket { p throws(DropReason) in
            try Encapsulation.parseIPIP(p, at: 0, limit: p.count)
        }
        #expect(decapsulated.offset == 20 && decapsulated.totalLength == inner.count)
    }

    @Test func vxlanEncapsulatesWithPerFlowSourcePorts() throws {
        let snapshot = try TestPackets.pool(port: 80).snapshot()
        let vxlan = Encapsulation.VXLAN(
            vni: 42, innerDestinationMAC: MACAddress(2, 0, 0, 0x0A, 0xA0, 0x01), innerSourceMAC: TestPackets.lbMAC)
        let forwarder = tunnel(.vxlan(vxlan))
        var sourcePorts = Set<UInt16>()
        for port in UInt16(40000)..<40050 {
            let inner = TestPackets.ipv4(sport: port)
            let (verdict, out) = send(forwarder, frame: TestPackets.ethernet() + inner, snapshot: snapshot)
            #expect(verdict == .emitted(segments: 1))
            let packet = try #require(out.first)
            #expect(packet.count == inner.count + 50)
            #expect(packet[9] == 17 && TestPackets.read16(packet, 22) == 4789)
            #expect(TestPackets.read16(packet, 24) == UInt16(packet.count - 20))
            #expect(TestPackets.checksumsValid(packet))  // zero UDP checksum counts as valid
            #expect(Array(packet[28..<36]) == [0x08, 0, 0, 0, 0, 0, 42, 0])
            #expect(Array(packet[36..<42]) == vxlan.innerDestinationMAC.array)
            #expect(Array(packet[50...]) == inner)
            let sport = TestPackets.read16(packet, 20)
            #expect(sport >= 49152)
            sourcePorts.insert(sport)
            // Same flow, same source port.
            let (_, again) = send(
                forwarder, frame: TestPackets.ethernet() + TestPackets.ipv4(sport: port, flags: 0x10),
                snapshot: snapshot)
            #expect(again.first.map { TestPackets.read16($0, 20) } == sport)
        }
        #expect(sourcePorts.count >= 45)  // 50 flows over 16384 ports: collisions are rare
    }

    @Test func tunnelFinishesChecksumsSplitsGSOAndCountsMTU() throws {
        let snapshot = try TestPackets.pool(port: 80).snapshot()
        let forwarder = tunnel(.ipip, mtu: 1500)
        // A 10,000-byte super-frame with a partial checksum, as veth delivers it.
        var inner = TestPackets.ipv4(flags: TCPFlags.ack | TCPFlags.psh, payload: [UInt8](repeating: 7, count: 10000))
        inner[36] = 0
        inner[37] = 0
        let gso = VirtioNetHeader(
            flags: 1, gsoType: VirtioNetHeader.gsoTCPv4, headerLength: 54, gsoSize: 1460, checksumStart: 34,
            checksumOffset: 16)
        let (verdict, out) = send(forwarder, frame: TestPackets.ethernet() + inner, offload: gso, snapshot: snapshot)
        #expect(verdict == .emitted(segments: 7))
        #expect(out.count == 7)
        for packet in out {
            #expect(TestPackets.checksumsValid(packet, at: 20))
            #expect(packet.count <= 1460 + 40 + 20)
        }
        #expect(forwarder.counters.gsoFrames == 1 && forwarder.counters.gsoSegments == 7)
        // 1460 + 40 + 20 = 1520 > 1500: six full segments would fragment.
        #expect(forwarder.counters.exceedsMTU == 6)

        // Partial checksum without GSO: finished in place.
        var small = TestPackets.ipv4(flags: TCPFlags.ack, payload: [1, 2, 3, 4, 5])
        let pseudo = Checksum.fold(TestPackets.pseudo(TestPackets.client, TestPackets.vip, 6, small.count - 20))
        small[36] = UInt8(pseudo >> 8)
        small[37] = UInt8(pseudo & 0xFF)
        let partial = VirtioNetHeader(flags: 1, checksumStart: 34, checksumOffset: 16)
        let (v2, out2) = send(forwarder, frame: TestPackets.ethernet() + small, offload: partial, snapshot: snapshot)
        #expect(v2 == .emitted(segments: 1))
        #expect(TestPackets.checksumsValid(try #require(out2.first), at: 20))

        // UDP GSO is not split in software: counted.
        let udpGSO = VirtioNetHeader(gsoType: VirtioNetHeader.gsoUDP, gsoSize: 1000)
        let (v3, _) = send(
            forwarder, frame: TestPackets.ethernet() + TestPackets.ipv4(), offload: udpGSO,
            snapshot: snapshot)
        #expect(v3 == .drop(.unsupportedGSO))
    }
}
