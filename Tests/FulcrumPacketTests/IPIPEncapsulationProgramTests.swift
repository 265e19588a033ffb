import Foundation
import FulcrumCore
import FulcrumPacket
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// IPIP's tcx encapsulation program: the forwarder's frames for its TAP (byte-exact, by hand), and in a network
/// namespace the program loaded, attached and run by the kernel — a frame written into the TAP leaves on a veth
/// with exactly the outer header we expect, and a GSO super-frame leaves whole (SKB_GSO_IPXIP4 kept through the
/// veth). Root for the namespace case, skipped loudly otherwise.
@Suite(.serialized) struct IPIPEncapsulationProgramTests {
    static let tapMAC = MACAddress(0x02, 0, 0, 0, 0xEE, 0x02)
    let frameSettings = FrameServiceSettings(
        service: VirtualServiceAddress(vip: TestPackets.vip, port: 80, proto: 6), localMAC: TestPackets.lbMAC)
    static let flow = FlowKey(
        source: TestPackets.client, destination: TestPackets.vip, sourcePort: 40000, destinationPort: 80, proto: 6)

    func forwarder() -> TunnelForwarder {
        TunnelForwarder(
            settings: TunnelSettings(
                frame: frameSettings, kind: .ipip, localAddress: TestPackets.lb, output: .ipipTAP(mac: Self.tapMAC)))
    }

    func send(
        _ forwarder: TunnelForwarder, frame: [UInt8], offload: VirtioNetHeader?
    ) throws -> (
        PacketVerdict, [[UInt8]], UInt32
    ) {
        let snapshot = try TestPackets.pool(port: 80).snapshot()
        let backend = try #require(snapshot.pick(flow: Self.flow, now: 0)?.ipv4)
        // The worker receives into its slot after the virtio_net_hdr: that is all the room the whole path needs.
        let (verdict, out) = TestPackets.tunnelSend(
            forwarder, frame: frame, offload: offload, snapshot: snapshot, headroom: VirtioNetHeader.length)
        return (verdict, out, backend)
    }

    /// A TCP super-frame as veth hands it over (checksum field zero: the forwarder must put the pseudo-header sum).
    static func superFrame(payload: Int, tos: UInt8 = 0) -> [UInt8] {
        var inner = TestPackets.ipv4(
            flags: TCPFlags.ack | TCPFlags.psh, payload: (0..<payload).map { UInt8(truncatingIfNeeded: $0 &* 7) },
            tos: tos)
        inner[36] = 0
        inner[37] = 0
        return inner
    }

    static func withPseudoHeaderSum(_ inner: [UInt8]) -> [UInt8] {
        var out = inner
        let pseudo = Checksum.fold(
            TestPackets.pseudo(TestPackets.read32(inner, 12), TestPackets.read32(inner, 16), 6, inner.count - 20))
        out[36] = UInt8(pseudo >> 8)
        out[37] = UInt8(pseudo & 0xFF)
        return out
    }

    @Test func superFrameGoesWholeWithTheBackendInTheSourceMAC() throws {
        let forwarder = forwarder()
        let inner = Self.superFrame(payload: 10000)
        let gso = VirtioNetHeader(
            flags: 1, gsoType: VirtioNetHeader.gsoTCPv4, headerLength: 54, gsoSize: 1428, checksumStart: 34,
            checksumOffset: 16)
        let (verdict, out, backend) = try send(forwarder, frame: TestPackets.ethernet() + inner, offload: gso)
        #expect(verdict == .emitted(segments: 1))
        // flags NEEDS_CSUM, TCPV4, hdr_len 14+40, gso_size 1428, csum 34+16 (little-endian); Ethernet to the TAP
        // from backend + id 1; the inner packet with the pseudo-header sum.
        let vnet: [UInt8] = [1, 1, 54, 0, 0x94, 0x05, 34, 0, 16, 0]
        let expected =
            vnet + Self.tapMAC.array + TestPackets.be32(backend) + [0, 1] + [8, 0] + Self.withPseudoHeaderSum(inner)
        #expect(out == [expected])
        #expect(forwarder.counters.gsoFramesWhole == 1 && forwarder.counters.gsoFrames == 0)
        // The program lowers gso_size to 1408: 10000 / 1408 → 8 segments, so the next frame's first id is 9.
        let (_, next, _) = try send(forwarder, frame: TestPackets.ethernet() + inner, offload: gso)
        #expect(next.first.map { TestPackets.read16($0, 10 + 10) } == 9)
        #expect(forwarder.counters.exceedsMTU == 0, "1408 + 40 + 20 + 20 = 1488 fits")
    }

    /// Small segments (iperf3 `-M 88`: 76 bytes of payload each) still go whole; the program makes them 56.
    @Test func superFrameOfSmallSegmentsGoesWholeToo() throws {
        let forwarder = forwarder()
        let inner = Self.superFrame(payload: 760)
        let gso = VirtioNetHeader(
            flags: 1, gsoType: VirtioNetHeader.gsoTCPv4, headerLength: 54, gsoSize: 76, checksumStart: 34,
            checksumOffset: 16)
        let (verdict, out, _) = try send(forwarder, frame: TestPackets.ethernet() + inner, offload: gso)
        #expect(verdict == .emitted(segments: 1) && out.count == 1)
        #expect(out.first.map { Array($0[0..<10]) } == [1, 1, 54, 0, 76, 0, 34, 0, 16, 0])
        #expect(forwarder.counters.gsoFramesWhole == 1)
        // 760 / 56 → 14 outer ids reserved.
        let (_, next, _) = try send(forwarder, frame: TestPackets.ethernet() + inner, offload: gso)
        #expect(next.first.map { TestPackets.read16($0, 10 + 10) } == 15)
    }

    @Test func smallPacketKeepsItsPartialChecksumAndAFullOneStaysUntouched() throws {
        let forwarder = forwarder()
        let complete = TestPackets.ipv4(flags: TCPFlags.ack, payload: Array("small".utf8))
        let partial = Self.withPseudoHeaderSum(complete)
        let needs = VirtioNetHeader(flags: 1, checksumStart: 34, checksumOffset: 16)
        let (verdict, out, backend) = try send(forwarder, frame: TestPackets.ethernet() + partial, offload: needs)
        #expect(verdict == .emitted(segments: 1))
        let ethernet = Self.tapMAC.array + TestPackets.be32(backend) + [0, 1] + [8, 0]
        #expect(out == [[1, 0, 0, 0, 0, 0, 34, 0, 16, 0] + ethernet + partial])
        let (_, plain, _) = try send(forwarder, frame: TestPackets.ethernet() + complete, offload: VirtioNetHeader())
        let ethernet2 = Self.tapMAC.array + TestPackets.be32(backend) + [0, 2] + [8, 0]
        #expect(plain == [[UInt8](repeating: 0, count: 10) + ethernet2 + complete])
        // A partial checksum pointing outside the packet is refused, not passed to the kernel.
        let bad = VirtioNetHeader(flags: 1, checksumStart: 30, checksumOffset: 16)
        let (dropped, none, _) = try send(forwarder, frame: TestPackets.ethernet() + partial, offload: bad)
        #expect(dropped == .drop(.badOffloadHeader) && none.isEmpty)
    }

    @Test func superFrameTooBigForOneOuterPacketIsSplitIntoPlainFrames() throws {
        let forwarder = forwarder()
        let inner = Self.superFrame(payload: 65535 - 40 - 10)
        let gso = VirtioNetHeader(
            flags: 1, gsoType: VirtioNetHeader.gsoTCPv4, headerLength: 54, gsoSize: 1428, checksumStart: 34,
            checksumOffset: 16)
        let (verdict, out, _) = try send(forwarder, frame: TestPackets.ethernet() + inner, offload: gso)
        let segments = (inner.count - 40 + 1427) / 1428
        #expect(verdict == .emitted(segments: segments) && out.count == segments)
        var payload = 0
        for (i, frame) in out.enumerated() {
            #expect(Array(frame[0..<10]) == [UInt8](repeating: 0, count: 10))
            #expect(TestPackets.read16(frame, 10 + 10) == UInt16(i + 1), "one outer id per segment")
            #expect(TestPackets.checksumsValid(frame, at: 24))
            payload += frame.count - 24 - 40
        }
        #expect(payload == inner.count - 40)
        #expect(forwarder.counters.gsoFrames == 1 && forwarder.counters.gsoFramesWhole == 0)
    }

    @Test func programCarriesTheSourceAddressAndEveryJumpLandsInside() {
        let code = IPIPEncapsulationProgram.instructions(source: TestPackets.lb)
        // `*(u32 *)(r10 - 20) = source` (BPF_ST | BPF_MEM | BPF_W, dst r10) with the address in wire order.
        let store = code.first { $0 & 0xFF == 0x62 && ($0 >> 8) & 0x0F == 10 && UInt16(($0 >> 16) & 0xFFFF) == 0xFFEC }
        #expect(store.map { UInt32(truncatingIfNeeded: $0 >> 32) } == TestPackets.lb.byteSwapped)
        #expect(code.last == 0x95, "ends with exit")
        for (i, instruction) in code.enumerated() where instruction & 0x07 == 0x05 && instruction & 0xF0 == 0x50 {
            let offset = Int(Int16(bitPattern: UInt16((instruction >> 16) & 0xFFFF)))
            #expect(i + 1 + offset < code.count && i + 1 + offset > i)
        }
        #expect(
            IPIPEncapsulationProgram.sourceMAC(backend: TestPackets.ip("10.200.0.11"), identification: 0x1234)
                == MACAddress(10, 200, 0, 11, 0x12, 0x34))
    }

    // MARK: - In the kernel

    /// Namespace `a`: TAP fip0 with the program (outer source 10.201.0.2) and eth0 10.201.0.2/24; namespace `b`:
    /// eth0 10.201.0.11/24 on the other end of the veth, where an AF_PACKET socket captures what arrives.
    @Test(.enabled(if: isRoot, "needs root for network namespaces and BPF: IPIP program test SKIPPED"))
    func programEncapsulatesWhatTheTAPGetsExactly() throws {
        let lab = NamespaceLab(prefix: "fipp\(getpid() % 100_000)")
        defer { lab.tearDown() }
        let (a, b) = try lab.twoHostsOnAVeth(
            a: ("10.201.0.2", "02:00:00:00:01:02"), b: ("10.201.0.11", "02:00:00:00:01:11"))
        let source = TestPackets.ip("10.201.0.2")
        let backend = TestPackets.ip("10.201.0.11")
        let (device, program) = try NetworkNamespace.perform(path: "/var/run/netns/\(a)") {
            () throws(PacketIOError) -> (TunnelTAPDevice, TCXIngressProgram) in
            let device = try TunnelTAPDevice(name: "fip0", format: .plain)
            let program = try TCXIngressProgram(
                instructions: IPIPEncapsulationProgram.instructions(source: source),
                interfaceIndex: Int32(if_nametoindex(device.name)), name: "fulcrum_ipip")
            return (device, program)
        }
        _ = program
        let capture = try NetworkNamespace.perform(path: "/var/run/netns/\(b)") { () throws(PacketIOError) in
            try PacketSocket(interface: "eth0")
        }

        func write(_ inner: [UInt8], header: [UInt8], identification: UInt16) {
            let frame =
                header + device.mac.array
                + IPIPEncapsulationProgram.sourceMAC(backend: backend, identification: identification).array + [8, 0]
                + inner
            let ok = frame.withUnsafeBytes { device.send($0) }
            #expect(ok, "TAP write of \(frame.count) bytes")
        }
        /// The next IPIP frame captured in `b` (its virtio_net_hdr first), waiting up to 3 s (ARP and the
        /// neighbour's first resolution pass by).
        func captured() -> [UInt8]? {
            var buffer = [UInt8](repeating: 0, count: 70000)
            let deadline = Date().addingTimeInterval(3)
            while Date() < deadline {
                var pfd = pollfd(fd: capture.fd, events: Int16(POLLIN), revents: 0)
                guard poll(&pfd, 1, 100) > 0 else { continue }
                let n = recv(capture.fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
                guard n >= 10 + 14 + 20 else { continue }
                if TestPackets.read16(buffer, 10 + 12) == 0x0800 && buffer[10 + 14 + 9] == 4 {
                    return Array(buffer[0..<n])
                }
            }
            return nil
        }
        func expectedOuter(inner: [UInt8], identification: UInt16) -> [UInt8] {
            var header: [UInt8] = [0x45, inner[1]] + TestPackets.be16(UInt16(inner.count + 20))
            header += TestPackets.be16(identification) + [0, 0, 63, 4, 0, 0]  // TTL 64, less the TAP's forward
            header += TestPackets.be32(source) + TestPackets.be32(backend)
            let c = TestPackets.referenceChecksum(header)
            header[10] = UInt8(c >> 8)
            header[11] = UInt8(c & 0xFF)
            return header
        }

        // A plain packet (TOS with ECN bits: the outer copies it), full checksum.
        let small = TestPackets.ipv4(
            dst: TestPackets.ip("10.200.0.100"), flags: TCPFlags.ack, payload: Array("hello".utf8), tos: 0x02)
        write(small, header: [UInt8](repeating: 0, count: 10), identification: 0x1234)
        let first = try #require(captured(), "the encapsulated packet reached the peer")
        #expect(Array(first[24..<44]) == expectedOuter(inner: small, identification: 0x1234))
        #expect(Array(first[44...]) == small, "inner packet unchanged")

        // A 10000-byte super-frame with a partial checksum: arrives whole, still GSO (TCPv4, gso_size lowered by
        // the outer header), one outer header in front of the unchanged inner packet.
        let inner = Self.withPseudoHeaderSum(Self.superFrame(payload: 10000))
        let gso: [UInt8] = [1, 1, 54, 0, 0x94, 0x05, 34, 0, 16, 0]  // NEEDS_CSUM, TCPv4, 1428
        write(inner, header: gso, identification: 7)
        var whole = try #require(captured(), "the encapsulated super-frame reached the peer")
        #expect(whole.count == 10 + 14 + 20 + inner.count, "one frame: not segmented on the way")
        let received = try whole.withPacket { p throws(DropReason) in try VirtioNetHeader(p, at: 0) }
        #expect(received.gsoType & ~VirtioNetHeader.gsoECN == VirtioNetHeader.gsoTCPv4 && received.gsoSize == 1408)
        #expect(received.flags & VirtioNetHeader.needsChecksum != 0)
        #expect(Array(whole[24..<44]) == expectedOuter(inner: inner, identification: 7))
        #expect(Array(whole[44...]) == inner)
    }
}
