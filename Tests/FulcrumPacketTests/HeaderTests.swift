import FulcrumPacket
import Testing

@Suite struct HeaderTests {
    func parse(_ bytes: [UInt8], limit: Int? = nil) -> Result<IPv4Info, DropReason> {
        var b = bytes
        return b.withPacket { p in
            do throws(DropReason) {
                return .success(try IPv4Header.parse(p, at: 0, limit: limit ?? bytes.count))
            } catch {
                return .failure(error)
            }
        }
    }

    @Test func parsesAValidPacket() throws {
        let packet = TestPackets.ipv4(payload: Array("hello".utf8))
        let ip = try parse(packet).get()
        #expect(ip.headerLength == 20)
        #expect(ip.totalLength == 45)
        #expect(ip.proto == 6)
        #expect(ip.source == TestPackets.client)
        #expect(ip.destination == TestPackets.vip)
        #expect(ip.dontFragment)
        var b = packet
        let t = try b.withPacket { p throws(DropReason) in try TransportHeader.parse(p, ip: ip) }
        #expect(t.sourcePort == 40000 && t.destinationPort == 80 && t.tcpFlags == TCPFlags.syn && t.headerLength == 20)
        #expect(b.withPacket { TransportHeader.verifyChecksum($0, ip: ip, transport: t) })
    }

    @Test func ignoresLinkLayerPadding() throws {
        let packet = TestPackets.ipv4() + [0, 0, 0, 0, 0, 0]
        let ip = try parse(packet).get()
        #expect(ip.end == 40)
    }

    @Test(arguments: [
        (mutation: "truncated", reason: DropReason.truncated),
        (mutation: "version6", reason: DropReason.badVersion),
        (mutation: "ihl4", reason: DropReason.badIHL),
        (mutation: "ihl15", reason: DropReason.truncated),
        (mutation: "totalTooBig", reason: DropReason.badTotalLength),
        (mutation: "totalTooSmall", reason: DropReason.badTotalLength),
        (mutation: "checksum", reason: DropReason.badChecksum),
        (mutation: "moreFragments", reason: DropReason.fragment),
        (mutation: "fragmentOffset", reason: DropReason.fragment),
    ])
    func rejectsMalformedIPv4(mutation: String, reason: DropReason) {
        var p = TestPackets.ipv4()
        var fixChecksum = true
        switch mutation {
        case "truncated": p = Array(p[0..<19])
        case "version6": p[0] = 0x65
        case "ihl4": p[0] = 0x44
        case "ihl15": p[0] = 0x4F
        case "totalTooBig": p[3] = 41
        case "totalTooSmall": p[3] = 19
        case "checksum":
            p[10] ^= 0x55
            fixChecksum = false
        case "moreFragments": p[6] = 0x20
        case "fragmentOffset": p[7] = 0x10
        default: Issue.record("unknown mutation")
        }
        if fixChecksum && p.count >= 20 {
            p[10] = 0
            p[11] = 0
            let c = TestPackets.referenceChecksum(Array(p[0..<20]))
            p[10] = UInt8(c >> 8)
            p[11] = UInt8(c & 0xFF)
        }
        #expect(parse(p) == .failure(reason))
    }

    @Test func rejectsBadTransportHeaders() throws {
        for (packet, reason) in [
            (Array(TestPackets.ipv4()[0..<30]), DropReason.badTotalLength),
            (fixTotal(Array(TestPackets.ipv4()[0..<30])), DropReason.truncated),
            (setByte(TestPackets.ipv4(), 32, 0x40), DropReason.badTransportHeader),  // data offset 16
            (setByte(TestPackets.ipv4(), 32, 0xF0), DropReason.badTransportHeader),  // data offset 60 > segment
            (setByte(TestPackets.ipv4(proto: 17), 25, 200), DropReason.badTransportHeader),  // UDP length too long
            (setByte(TestPackets.ipv4(proto: 17), 9, 47), DropReason.unsupportedProtocol),
        ] {
            var b = fixHeaderChecksum(packet)
            let result: Result<TransportInfo, DropReason> = b.withPacket { p in
                do throws(DropReason) {
                    let ip = try IPv4Header.parse(p, at: 0, limit: p.count)
                    return .success(try TransportHeader.parse(p, ip: ip))
                } catch {
                    return .failure(error)
                }
            }
            #expect(result == .failure(reason))
        }
    }

    func setByte(_ b: [UInt8], _ i: Int, _ v: UInt8) -> [UInt8] {
        var c = b
        c[i] = v
        return c
    }

    func fixTotal(_ b: [UInt8]) -> [UInt8] {
        var c = b
        c[2] = 0
        c[3] = UInt8(b.count)
        return c
    }

    func fixHeaderChecksum(_ b: [UInt8]) -> [UInt8] {
        var c = b
        c[10] = 0
        c[11] = 0
        let s = TestPackets.referenceChecksum(Array(c[0..<20]))
        c[10] = UInt8(s >> 8)
        c[11] = UInt8(s & 0xFF)
        return c
    }

    @Test func arpReplyAndGratuitousARP() throws {
        var request = TestPackets.arpRequest(target: TestPackets.vip)
        let message = try request.withPacket { p throws(DropReason) in try ARP.parse(p, length: p.count) }
        #expect(message.operation == ARP.opRequest && message.targetIP == TestPackets.vip)
        #expect(ARP.reply(to: message, ip: TestPackets.lb, mac: TestPackets.lbMAC) == nil)
        let reply = try #require(ARP.reply(to: message, ip: TestPackets.vip, mac: TestPackets.lbMAC))
        var frame = [UInt8](repeating: 0, count: 42)
        frame.withPacket { _ = ARP.write(into: $0, ethernetDestination: message.senderMAC, message: reply) }
        let expected =
            TestPackets.clientMAC.array + TestPackets.lbMAC.array + [8, 6, 0, 1, 8, 0, 6, 4, 0, 2]
            + TestPackets.lbMAC.array + TestPackets.be32(TestPackets.vip) + TestPackets.clientMAC.array
            + TestPackets.be32(TestPackets.client)
        #expect(frame == expected)

        let garp = ARP.gratuitous(ip: TestPackets.vip, mac: TestPackets.lbMAC)
        let garpExpected =
            MACAddress.broadcast.array + TestPackets.lbMAC.array + [8, 6, 0, 1, 8, 0, 6, 4, 0, 1]
            + TestPackets.lbMAC.array + TestPackets.be32(TestPackets.vip) + [0, 0, 0, 0, 0, 0]
            + TestPackets.be32(TestPackets.vip)
        #expect(garp == garpExpected)
    }

    @Test func macAddressText() {
        #expect(MACAddress("02:00:00:0a:a0:11")?.description == "02:00:00:0a:a0:11")
        #expect(MACAddress("02:00:00:0a:a0") == nil)
        #expect(MACAddress("zz:00:00:0a:a0:11") == nil)
    }

    @Test func dropCountersCountByReason() {
        var counters = DropCounters()
        counters.record(.fragment)
        counters.record(.fragment)
        counters.record(.badChecksum)
        #expect(counters[.fragment] == 2 && counters[.badChecksum] == 1 && counters[.truncated] == 0)
        #expect(counters.total == 3)
        #expect(counters.nonZero.map(\.0) == [.badChecksum, .fragment])
    }
}

@Suite struct NeighborTableTests {
    @Test func learnsFromARPAndStaysBounded() {
        var table = NeighborTable(capacity: 2)
        var frame = TestPackets.arpRequest(
            target: TestPackets.vip, senderIP: TestPackets.ip("10.200.0.11"),
            senderMAC: MACAddress(2, 0, 0, 0, 0, 0x11))
        frame.withPacket { table.learn(fromFrame: $0, frameStart: 0, length: $0.count) }
        #expect(table.lookup(TestPackets.ip("10.200.0.11")) == MACAddress(2, 0, 0, 0, 0, 0x11))
        table.learn(0, MACAddress(2, 0, 0, 0, 0, 1))  // a probe's sender
        table.learn(5, .broadcast)
        #expect(table.count == 1)
        table.learn(6, MACAddress(2, 0, 0, 0, 0, 6))
        table.learn(7, MACAddress(2, 0, 0, 0, 0, 7))
        #expect(table.count == 2 && table.lookup(7) == nil)
        var ip = TestPackets.ethernet() + TestPackets.ipv4()
        ip.withPacket { table.learn(fromFrame: $0, frameStart: 0, length: $0.count) }
        #expect(table.count == 2)
    }

    @Test func arpProbe() {
        let probe = ARP.request(target: TestPackets.ip("10.200.0.12"), senderMAC: TestPackets.lbMAC)
        #expect(Array(probe[0..<6]) == MACAddress.broadcast.array)
        #expect(TestPackets.read16(probe, 20) == ARP.opRequest)
        #expect(TestPackets.read32(probe, 28) == 0)
        #expect(TestPackets.read32(probe, 38) == TestPackets.ip("10.200.0.12"))
    }
}

@Suite struct DropCountersTextTests {
    @Test func describesNonZeroReasons() {
        var counters = DropCounters()
        #expect(counters.description == "none")
        counters.record(.fragment)
        counters.record(.badVersion)
        #expect(counters.description == "bad_version=1 fragment=1")
    }
}
