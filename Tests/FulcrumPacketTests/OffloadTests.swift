import FulcrumPacket
import Testing

@Suite struct OffloadTests {
    @Test func virtioHeaderRoundTrips() throws {
        let header = VirtioNetHeader(
            flags: 1, gsoType: VirtioNetHeader.gsoTCPv4, headerLength: 66, gsoSize: 1448, checksumStart: 34,
            checksumOffset: 16)
        var bytes = [UInt8](repeating: 0, count: 10)
        bytes.withPacket { header.write(into: $0, at: 0) }
        #expect(bytes == [1, 1, 66, 0, 0xA8, 0x05, 34, 0, 16, 0])
        let parsed = try bytes.withPacket { p throws(DropReason) in try VirtioNetHeader(p, at: 0) }
        #expect(parsed == header && parsed.isGSO)
    }

    /// A frame as veth hands it over with CHECKSUM_PARTIAL: the TCP checksum field holds the pseudo-header sum.
    func partialFrame(payload: [UInt8]) -> [UInt8] {
        var packet = TestPackets.ipv4(flags: TCPFlags.ack | TCPFlags.psh, payload: payload)
        let length = packet.count - 20
        let pseudo = Checksum.fold(TestPackets.pseudo(TestPackets.client, TestPackets.vip, 6, length))
        packet[36] = UInt8(pseudo >> 8)
        packet[37] = UInt8(pseudo & 0xFF)
        return TestPackets.ethernet() + packet
    }

    @Test func finishesPartialChecksum() throws {
        var frame = partialFrame(payload: Array("partial checksum".utf8))
        #expect(!TestPackets.checksumsValid(frame, at: 14))
        let header = VirtioNetHeader(flags: 1, checksumStart: 34, checksumOffset: 16)
        try frame.withPacket { p throws(DropReason) in
            try Offload.finishPartialChecksum(p, frameStart: 0, end: p.count, header: header)
        }
        #expect(TestPackets.checksumsValid(frame, at: 14))
    }

    /// NAT on a TUN with offloads: after rewriting addresses and ports of a partial-checksum packet, the field
    /// must hold the new pseudo-header sum, or the checksum finished later (by a device or `Offload`) is wrong.
    @Test(arguments: [false, true])
    func refreshesPseudoHeaderAfterRewrite(refresh: Bool) throws {
        var frame = partialFrame(payload: Array("rewritten partial checksum".utf8))
        var packet = Array(frame[14...])
        let header = VirtioNetHeader(flags: 1, checksumStart: 20, checksumOffset: 16)
        try packet.withPacket { p throws(DropReason) in
            let ip = try IPv4Header.parse(p, at: 0, limit: p.count)
            let tcp = try TransportHeader.parse(p, ip: ip)
            TransportHeader.rewrite(
                p, ip: ip, transport: tcp, source: 0x0A01_0203, destination: 0xC0A8_0A0B, sourcePort: 61000,
                destinationPort: 8080)
            if refresh {
                let rewritten = try IPv4Header.parse(p, at: 0, limit: p.count)
                Offload.refreshPseudoHeaderChecksum(
                    p, ip: rewritten, transport: try TransportHeader.parse(p, ip: rewritten))
            }
            try Offload.finishPartialChecksum(p, frameStart: 0, end: p.count, header: header)
        }
        #expect(TestPackets.checksumsValid(packet) == refresh)
        frame = packet
        #expect(frame[12...15] == [10, 1, 2, 3])
    }

    @Test func rejectsPartialChecksumBeyondTheFrame() {
        var frame = partialFrame(payload: [1, 2, 3])
        for header in [
            VirtioNetHeader(flags: 1, checksumStart: 200, checksumOffset: 16),
            VirtioNetHeader(flags: 1, checksumStart: 34, checksumOffset: 600),
            VirtioNetHeader(flags: 1, checksumStart: 0xFFFF, checksumOffset: 0xFFFF),
        ] {
            let result: DropReason? = frame.withPacket { p in
                do throws(DropReason) {
                    try Offload.finishPartialChecksum(p, frameStart: 0, end: p.count, header: header)
                    return nil
                } catch { return error }
            }
            #expect(result == .badOffloadHeader)
        }
    }

    @Test(arguments: [(payload: 4000, mss: 1448), (payload: 2896, mss: 1448), (payload: 100, mss: 1448), (0, 536)])
    func splitsTCPSuperFrames(payload: Int, mss: Int) throws {
        var rng = SeededGenerator(seed: UInt64(payload))
        let data = (0..<payload).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let flags = TCPFlags.ack | TCPFlags.psh | TCPFlags.fin | TCPFlags.cwr
        var packet = TestPackets.ipv4(flags: flags, seq: 0xFFFF_FF00, payload: data, id: 0xFFFE)
        var scratch = [UInt8](repeating: 0, count: 2048)
        var segments: [[UInt8]] = []
        let count = try packet.withPacket { p in
            let ip = try IPv4Header.parse(p, at: 0, limit: p.count)
            let tcp = try TransportHeader.parse(p, ip: ip)
            return try scratch.withPacket { s throws(DropReason) in
                try Offload.segmentTCPv4(p, ip: ip, tcp: tcp, mss: mss, scratch: s, headroom: 50) { segment in
                    segments.append(Array(s.slice(segment.offset..<segment.end)))
                }
            }
        }
        let expectedCount = max(1, (payload + mss - 1) / mss)
        #expect(count == expectedCount && segments.count == expectedCount)
        var reassembled: [UInt8] = []
        for (i, segment) in segments.enumerated() {
            let isLast = i == segments.count - 1
            #expect(TestPackets.checksumsValid(segment), "segment \(i)")
            #expect(Int(TestPackets.read16(segment, 2)) == segment.count)
            #expect(TestPackets.read16(segment, 4) == 0xFFFE &+ UInt16(i))
            #expect(TestPackets.read32(segment, 24) == 0xFFFF_FF00 &+ UInt32(i * mss))
            let f = segment[33]
            #expect((f & TCPFlags.fin != 0) == isLast && (f & TCPFlags.psh != 0) == isLast)
            #expect((f & TCPFlags.cwr != 0) == (i == 0))
            #expect(f & TCPFlags.ack != 0)
            #expect(segment.count - 40 <= mss)
            reassembled += segment[40...]
        }
        #expect(reassembled == data)
    }

    @Test func refusesTinyMSS() throws {
        var packet = TestPackets.ipv4(payload: [UInt8](repeating: 1, count: 1000))
        var scratch = [UInt8](repeating: 0, count: 2048)
        let result: DropReason? = packet.withPacket { p in
            scratch.withPacket { s in
                do throws(DropReason) {
                    let ip = try IPv4Header.parse(p, at: 0, limit: p.count)
                    let tcp = try TransportHeader.parse(p, ip: ip)
                    try Offload.segmentTCPv4(p, ip: ip, tcp: tcp, mss: 1, scratch: s, headroom: 0) { _ in }
                    return nil
                } catch { return error }
            }
        }
        #expect(result == .badOffloadHeader)
    }
}
