import FulcrumCore
import FulcrumPacket
import Testing

/// `fulcrum decap --ipip`'s decision per received frame: which virtio_net_hdr the inner packet gets for the TUN
/// (GSO whole, partial checksum kept, or none so the kernel verifies), built by hand and compared byte for byte.
@Suite struct IPIPDecapsulationTests {
    static let balancer = TestPackets.lb
    static let backend = TestPackets.ip("10.200.0.11")

    /// Ethernet + outer IPv4 (protocol 4, valid checksum) around `inner`.
    static func frame(_ inner: [UInt8], flags: UInt16 = 0) -> [UInt8] {
        var outer: [UInt8] = [0x45, 0] + TestPackets.be16(UInt16(inner.count + 20)) + [0, 9]
        outer += TestPackets.be16(flags) + [63, 4, 0, 0] + TestPackets.be32(balancer) + TestPackets.be32(backend)
        let c = TestPackets.referenceChecksum(outer)
        outer[10] = UInt8(c >> 8)
        outer[11] = UInt8(c & 0xFF)
        return TestPackets.ethernet(dst: MACAddress(2, 0, 0, 0, 0, 0x11), src: TestPackets.lbMAC) + outer + inner
    }

    /// Runs `prepare` on `frame` received with `offload`; returns the thrown reason or the TUN write.
    static func prepare(_ frame: [UInt8], _ offload: VirtioNetHeader) -> Result<[UInt8], DropReason> {
        var buffer = frame
        return buffer.withPacket { p in
            do throws(DropReason) {
                let prepared = try IPIPDecapsulation.prepare(
                    p, frameStart: 0, length: frame.count, offload: offload, isLocal: { $0 == backend })
                return .success(Array(p.slice(prepared.range)))
            } catch {
                return .failure(error)
            }
        }
    }

    static func superFrame(checksum: UInt16) -> [UInt8] {
        var inner = TestPackets.ipv4(
            dst: TestPackets.vip, flags: TCPFlags.ack, payload: (0..<8000).map { UInt8(truncatingIfNeeded: $0) })
        inner[36] = UInt8(checksum >> 8)
        inner[37] = UInt8(checksum & 0xFF)
        return inner
    }

    static var pseudoHeaderSum: UInt16 {
        UInt16(Checksum.fold(TestPackets.pseudo(TestPackets.client, TestPackets.vip, 6, 8000 + 20)))
    }

    /// A GSO frame from a local or veth sender (partial checksum) and one merged by GRO (DATA_VALID, the first
    /// segment's stale checksum) both become one TCPv4 GSO write with NEEDS_CSUM and the pseudo-header sum.
    @Test(arguments: [(UInt8(1), UInt16(0x1234)), (UInt8(2), UInt16(0xBEEF)), (UInt8(0), UInt16(0))])
    func gsoFrameBecomesOneGSOWrite(flags: UInt8, staleChecksum: UInt16) throws {
        let inner = Self.superFrame(checksum: staleChecksum)
        let offload = VirtioNetHeader(
            flags: flags, gsoType: VirtioNetHeader.gsoTCPv4 | VirtioNetHeader.gsoECN, headerLength: 74, gsoSize: 1408,
            checksumStart: flags == 1 ? 54 : 0, checksumOffset: flags == 1 ? 16 : 0)
        let written = try Self.prepare(Self.frame(inner), offload).get()
        // NEEDS_CSUM; TCPV4|ECN; hdr_len 40; gso_size 1408 (0x0580); csum_start 20, offset 16 (little-endian).
        let header: [UInt8] = [1, 0x81, 40, 0, 0x80, 0x05, 20, 0, 16, 0]
        var expected = inner
        expected[36] = UInt8(Self.pseudoHeaderSum >> 8)
        expected[37] = UInt8(Self.pseudoHeaderSum & 0xFF)
        #expect(written == header + expected)
    }

    /// A small packet with a partial checksum keeps it, the start moved from the frame to the inner packet; one
    /// with a full checksum (DATA_VALID or nothing) goes without flags, for the kernel to verify as before.
    @Test func smallPacketsKeepTheirChecksumState() throws {
        let complete = TestPackets.ipv4(dst: TestPackets.vip, flags: TCPFlags.ack, payload: Array("hi".utf8))
        var partial = complete
        let pseudo = Checksum.fold(TestPackets.pseudo(TestPackets.client, TestPackets.vip, 6, complete.count - 20))
        partial[36] = UInt8(pseudo >> 8)
        partial[37] = UInt8(pseudo & 0xFF)
        let needs = VirtioNetHeader(flags: 1, checksumStart: 54, checksumOffset: 16)
        #expect(try Self.prepare(Self.frame(partial), needs).get() == [1, 0, 0, 0, 0, 0, 20, 0, 16, 0] + partial)
        for flags in [UInt8(0), 2] {
            let plain = try Self.prepare(Self.frame(complete), VirtioNetHeader(flags: flags)).get()
            #expect(plain == [UInt8](repeating: 0, count: 10) + complete)
        }
        // Ethernet padding after a short packet is not written into the TUN.
        let padded = try Self.prepare(Self.frame(complete) + [0, 0, 0, 0], VirtioNetHeader()).get()
        #expect(padded.count == 10 + complete.count)
    }

    @Test func malformedFramesAreRefusedWithTheirReason() {
        let complete = TestPackets.ipv4(dst: TestPackets.vip, flags: TCPFlags.ack, payload: Array("hi".utf8))
        let gso = VirtioNetHeader(flags: 1, gsoType: VirtioNetHeader.gsoTCPv4, gsoSize: 1408, checksumStart: 54)
        let udp = TestPackets.ipv4(dst: TestPackets.vip, proto: 17, payload: Array("hi".utf8))
        var badOuter = Self.frame(complete)
        badOuter[14 + 10] ^= 0xFF
        var notIPIP = Self.frame(complete)
        notIPIP[14 + 9] = 6
        let cases: [([UInt8], VirtioNetHeader, DropReason)] = [
            (badOuter, VirtioNetHeader(), .badChecksum),
            (notIPIP, VirtioNetHeader(), .badChecksum),  // the protocol byte is under the header checksum
            (Self.frame(complete, flags: 0x2000), VirtioNetHeader(), .fragment),
            (Self.frame(udp), gso, .unsupportedGSO),
            (
                Self.frame(complete), VirtioNetHeader(flags: 0, gsoType: VirtioNetHeader.gsoUDP, gsoSize: 1000),
                .unsupportedGSO
            ),
            (Self.frame(complete), VirtioNetHeader(flags: 1, checksumStart: 40, checksumOffset: 16), .badOffloadHeader),
            (
                Self.frame(complete), VirtioNetHeader(flags: 1, checksumStart: 54, checksumOffset: 200),
                .badOffloadHeader
            ),
            (Array(Self.frame(complete)[0..<30]), VirtioNetHeader(), .truncated),
            (TestPackets.ethernet(type: 0x86DD) + complete, VirtioNetHeader(), .unsupportedEtherType),
        ]
        for (frame, offload, reason) in cases {
            #expect(Self.prepare(frame, offload) == .failure(reason), "\(reason)")
        }
        // Addressed to another host (a packet socket sees frames the kernel would forward): not ours.
        var elsewhere = Self.frame(complete)
        elsewhere[14 + 19] ^= 1
        Self.refreshOuterChecksum(&elsewhere)
        #expect(Self.prepare(elsewhere, VirtioNetHeader()) == .failure(.notLocal))
        // With its checksum fixed, another protocol is what it is: not IPIP.
        var tcp = Self.frame(complete)
        tcp[14 + 9] = 6
        Self.refreshOuterChecksum(&tcp)
        #expect(Self.prepare(tcp, VirtioNetHeader()) == .failure(.unsupportedProtocol))
    }

    /// Recomputes the outer IPv4 header checksum of `frame` after a test changed a header field.
    static func refreshOuterChecksum(_ frame: inout [UInt8]) {
        frame[14 + 10] = 0
        frame[14 + 11] = 0
        let c = TestPackets.referenceChecksum(Array(frame[14..<34]))
        frame[14 + 10] = UInt8(c >> 8)
        frame[14 + 11] = UInt8(c & 0xFF)
    }
}
