import FulcrumCore
import FulcrumPacket
import Testing

/// VXLAN through the TAP device: the 24-byte tunnel virtio_net_hdr and whole-frame encapsulation, compared
/// byte for byte with frames built here by hand (offsets as `virtio_net_hdr_tnl_to_skb` reads them).
@Suite struct TunnelGSOTests {
    static let tapMAC = MACAddress(0x02, 0, 0, 0, 0xEE, 0x01)
    static let vxlanMAC = MACAddress(2, 0, 0, 0x0A, 0xA0, 0x01)
    static let vxlan = Encapsulation.VXLAN(vni: 42, innerDestinationMAC: vxlanMAC, innerSourceMAC: TestPackets.lbMAC)
    let frameSettings = FrameServiceSettings(
        service: VirtualServiceAddress(vip: TestPackets.vip, port: 80, proto: 6), localMAC: TestPackets.lbMAC)
    static let flow = FlowKey(
        source: TestPackets.client, destination: TestPackets.vip, sourcePort: 40000, destinationPort: 80, proto: 6)

    @Test func tunnelHeaderLayoutIsByteExact() throws {
        let header = VirtioNetTunnelHeader.vxlanTCPv4(
            outerTransportOffset: 34, innerNetworkOffset: 64, innerTransportOffset: 84, innerHeadersEnd: 104,
            segmentSize: 1410, ecn: true)
        var bytes = [UInt8](repeating: 0xAA, count: 24)
        bytes.withPacket { header.write(into: $0, at: 0) }
        // flags NEEDS_CSUM; gso TCPV4 | UDP_TUNNEL_IPV4 | ECN; hdr_len 104; gso_size 1410; csum 84 + 16;
        // num_buffers 0; 8 bytes of hash 0; outer_th 34; inner_nh 64 (all little-endian).
        let expected: [UInt8] =
            [1, 0xA1, 104, 0, 0x82, 0x05, 84, 0, 16, 0, 0, 0] + [UInt8](repeating: 0, count: 8) + [34, 0, 64, 0]
        #expect(bytes == expected)
        let parsed = try bytes.withPacket { p throws(DropReason) in try VirtioNetTunnelHeader(p, at: 0) }
        #expect(parsed == header)
        // Without offloads (packets that are not GSO): all zero.
        var plain = [UInt8](repeating: 0xAA, count: 24)
        plain.withPacket { VirtioNetTunnelHeader().write(into: $0, at: 0) }
        #expect(plain == [UInt8](repeating: 0, count: 24))
    }

    func forwarder(mtu: Int = 1500) -> TunnelForwarder {
        TunnelForwarder(
            settings: TunnelSettings(
                frame: frameSettings, kind: .vxlan(Self.vxlan), localAddress: TestPackets.lb, mtu: mtu,
                output: .tap(mac: Self.tapMAC)))
    }

    func send(
        _ forwarder: TunnelForwarder, frame: [UInt8], offload: VirtioNetHeader?, snapshot: PoolSnapshot
    ) -> (PacketVerdict, [[UInt8]]) {
        // Exactly the documented need: `settings.headroom` before the IP header, the Ethernet header included.
        let headroom = forwarder.settings.headroom - Ethernet.headerLength
        return TestPackets.tunnelSend(forwarder, frame: frame, offload: offload, snapshot: snapshot, headroom: headroom)
    }

    /// The frame the TAP must get for `inner` (its TCP checksum field as given), built independently.
    func expectedFrame(
        vnet: [UInt8], inner: [UInt8], backend: UInt32, sourcePort: UInt16, identification: UInt16
    ) -> [UInt8] {
        let total = inner.count + 50
        var outerIP: [UInt8] = [0x45, inner[1]] + TestPackets.be16(UInt16(total)) + TestPackets.be16(identification)
        outerIP += [0, 0, 64, 17, 0, 0] + TestPackets.be32(TestPackets.lb) + TestPackets.be32(backend)
        let c = TestPackets.referenceChecksum(outerIP)
        outerIP[10] = UInt8(c >> 8)
        outerIP[11] = UInt8(c & 0xFF)
        let udp = TestPackets.be16(sourcePort) + TestPackets.be16(4789) + TestPackets.be16(UInt16(total - 20)) + [0, 0]
        let vxlanHeader: [UInt8] = [0x08, 0, 0, 0, 0, 0, 42, 0]
        let innerEthernet = Self.vxlanMAC.array + TestPackets.lbMAC.array + [0x08, 0]
        let outerEthernet = Self.tapMAC.array + TestPackets.lbMAC.array + [0x08, 0]
        return vnet + outerEthernet + outerIP + udp + vxlanHeader + innerEthernet + inner
    }

    /// A client's TCP super-frame as veth hands it over: one IPv4 packet of `payload` bytes, the checksum field
    /// zero (a GRO frame's is stale; the forwarder must put the pseudo-header sum there).
    func superFrame(payload: Int) -> [UInt8] {
        var inner = TestPackets.ipv4(
            flags: TCPFlags.ack | TCPFlags.psh, payload: (0..<payload).map { UInt8(truncatingIfNeeded: $0) })
        inner[36] = 0
        inner[37] = 0
        return inner
    }

    @Test func superFrameIsEncapsulatedWholeForTheKernelToSegment() throws {
        let snapshot = try TestPackets.pool(port: 80).snapshot()
        let backend = try #require(snapshot.pick(flow: Self.flow, now: 0)?.ipv4)
        let forwarder = forwarder()
        let inner = superFrame(payload: 10000)
        let gso = VirtioNetHeader(
            flags: 1, gsoType: VirtioNetHeader.gsoTCPv4, headerLength: 54, gsoSize: 1410, checksumStart: 34,
            checksumOffset: 16)
        let (verdict, out) = send(forwarder, frame: TestPackets.ethernet() + inner, offload: gso, snapshot: snapshot)
        #expect(verdict == .emitted(segments: 1))
        #expect(out.count == 1)
        let frame = try #require(out.first)
        var expectedInner = inner
        let pseudo = Checksum.fold(TestPackets.pseudo(TestPackets.client, TestPackets.vip, 6, inner.count - 20))
        expectedInner[36] = UInt8(pseudo >> 8)
        expectedInner[37] = UInt8(pseudo & 0xFF)
        let vnet: [UInt8] =
            [1, 0x21, 104, 0, 0x82, 0x05, 84, 0, 16, 0, 0, 0] + [UInt8](repeating: 0, count: 8) + [34, 0, 64, 0]
        let expected = expectedFrame(
            vnet: vnet, inner: expectedInner, backend: backend,
            sourcePort: Encapsulation.vxlanSourcePort(flowHash: Self.flow.stableHash), identification: 1)
        #expect(frame.count == expected.count)
        #expect(frame == expected)
        #expect(forwarder.counters.gsoFramesWhole == 1 && forwarder.counters.gsoFrames == 0)
        #expect(forwarder.counters.packetsIn == 1 && forwarder.counters.bytesIn == UInt64(inner.count))
        // 1410 + 40 + 50 = 1500: no segment above the MTU.
        #expect(forwarder.counters.exceedsMTU == 0)

        // The next frame's outer ids start after the 8 the kernel gives this one's segments (10000 / 1410).
        let (_, next) = send(forwarder, frame: TestPackets.ethernet() + inner, offload: gso, snapshot: snapshot)
        let second = try #require(next.first)
        #expect(TestPackets.read16(second, 24 + 14 + 4) == 9)
    }

    @Test func segmentsAboveTheMTUAreCountedPerSegment() throws {
        let snapshot = try TestPackets.pool(port: 80).snapshot()
        let forwarder = forwarder()
        let gso = VirtioNetHeader(
            flags: 1, gsoType: VirtioNetHeader.gsoTCPv4 | VirtioNetHeader.gsoECN, headerLength: 54, gsoSize: 1460,
            checksumStart: 34, checksumOffset: 16)
        let (_, out) = send(
            forwarder, frame: TestPackets.ethernet() + superFrame(payload: 10000), offload: gso, snapshot: snapshot)
        let frame = try #require(out.first)
        #expect(frame[1] == 0xA1, "ECN kept in the tunnel GSO type")
        // Six full segments of 1460 + 40 + 50 = 1550 bytes; the last (1240 bytes of payload) fits.
        #expect(forwarder.counters.exceedsMTU == 6)
    }

    @Test func plainPacketGetsAHeaderWithoutOffloadsAndAFinishedChecksum() throws {
        let snapshot = try TestPackets.pool(port: 80).snapshot()
        let backend = try #require(snapshot.pick(flow: Self.flow, now: 0)?.ipv4)
        let forwarder = forwarder()
        let complete = TestPackets.ipv4(flags: TCPFlags.ack, payload: Array("small".utf8))
        var partial = complete
        let pseudo = Checksum.fold(TestPackets.pseudo(TestPackets.client, TestPackets.vip, 6, partial.count - 20))
        partial[36] = UInt8(pseudo >> 8)
        partial[37] = UInt8(pseudo & 0xFF)
        let header = VirtioNetHeader(flags: 1, checksumStart: 34, checksumOffset: 16)
        let (verdict, out) = send(
            forwarder, frame: TestPackets.ethernet() + partial, offload: header, snapshot: snapshot)
        #expect(verdict == .emitted(segments: 1))
        let expected = expectedFrame(
            vnet: [UInt8](repeating: 0, count: 24), inner: complete, backend: backend,
            sourcePort: Encapsulation.vxlanSourcePort(flowHash: Self.flow.stableHash), identification: 1)
        #expect(out == [expected])
        #expect(forwarder.counters.gsoFramesWhole == 0)
    }

    /// Outer IPv4 packets end at 65535 bytes: a super-frame that does not fit with 50 bytes of outer headers
    /// is split in software, each segment a plain frame for the TAP.
    @Test func superFrameTooBigForOneOuterPacketIsSplit() throws {
        let snapshot = try TestPackets.pool(port: 80).snapshot()
        let forwarder = forwarder()
        let inner = superFrame(payload: 65535 - 40 - 20)
        let gso = VirtioNetHeader(
            flags: 1, gsoType: VirtioNetHeader.gsoTCPv4, headerLength: 54, gsoSize: 1410, checksumStart: 34,
            checksumOffset: 16)
        let (verdict, out) = send(forwarder, frame: TestPackets.ethernet() + inner, offload: gso, snapshot: snapshot)
        let segments = (inner.count - 40 + 1409) / 1410
        #expect(verdict == .emitted(segments: segments))
        #expect(out.count == segments)
        var payload = 0
        for frame in out {
            #expect(Array(frame[0..<24]) == [UInt8](repeating: 0, count: 24))
            #expect(Array(frame[24..<30]) == Self.tapMAC.array)
            #expect(frame.count <= 24 + 14 + 1500)
            #expect(TestPackets.checksumsValid(frame, at: 24 + 14 + 50))
            payload += frame.count - (24 + 14 + 50 + 40)
        }
        #expect(payload == inner.count - 40)
        #expect(forwarder.counters.gsoFrames == 1 && forwarder.counters.gsoFramesWhole == 0)
    }

    /// The raw-socket output (IPIP, or VXLAN without a TAP) still splits: no IPIP packet is ever handed to the
    /// kernel as TCP GSO (a device would segment it as if it were plain TCP).
    @Test func rawSocketOutputStillSplits() throws {
        let snapshot = try TestPackets.pool(port: 80).snapshot()
        let forwarder = TunnelForwarder(
            settings: TunnelSettings(frame: frameSettings, kind: .vxlan(Self.vxlan), localAddress: TestPackets.lb))
        let gso = VirtioNetHeader(
            flags: 1, gsoType: VirtioNetHeader.gsoTCPv4, headerLength: 54, gsoSize: 1410, checksumStart: 34,
            checksumOffset: 16)
        let (verdict, out) = send(
            forwarder, frame: TestPackets.ethernet() + superFrame(payload: 5000), offload: gso, snapshot: snapshot)
        #expect(verdict == .emitted(segments: 4))
        #expect(out.allSatisfy { $0[0] == 0x45 && TestPackets.checksumsValid($0, at: 50) })
        #expect(forwarder.counters.gsoFramesWhole == 0 && forwarder.counters.gsoFrames == 1)
    }
}
