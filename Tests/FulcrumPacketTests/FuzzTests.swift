import Foundation
import FulcrumCore
import FulcrumPacket
import Testing

/// Random and mutated packets through every parser and every mode's processor: each must end in a verdict
/// (forward, reply, emitted or a counted drop), never a trap. Debug builds bounds-check every buffer access,
/// so an out-of-bounds read would trap here.
///
/// A debug build runs 100,000 packets by default (≈ 3 s; the full million takes 33–63 s in debug on the 2-core
/// machine); a release build runs the million. `FULCRUM_FUZZ_ITERATIONS` and `FULCRUM_FUZZ_SEED` override:
/// `FULCRUM_FUZZ_ITERATIONS=1000000 swift test --skip-build --filter FuzzTests` (debug) or
/// `swift test -c release --filter FuzzTests`.
@Suite struct FuzzTests {
    #if DEBUG
    static let defaultIterations = 100_000
    #else
    static let defaultIterations = 1_000_000
    #endif
    static let iterations =
        ProcessInfo.processInfo.environment["FULCRUM_FUZZ_ITERATIONS"].flatMap { Int($0) }
        ?? defaultIterations
    static let seed = ProcessInfo.processInfo.environment["FULCRUM_FUZZ_SEED"].flatMap { UInt64($0) } ?? 0xF0CC

    /// Well-formed frames the mutations start from (Ethernet + IPv4 or ARP).
    static let templates: [[UInt8]] = {
        let e = TestPackets.ethernet()
        return [
            e + TestPackets.ipv4(flags: TCPFlags.syn),
            e + TestPackets.ipv4(flags: TCPFlags.ack, payload: [UInt8](repeating: 0x41, count: 300)),
            e + TestPackets.ipv4(flags: TCPFlags.ack | TCPFlags.fin, payload: Array("bye".utf8)),
            e + TestPackets.ipv4(proto: 17, sport: 5000, dport: 80, payload: Array("udp".utf8)),
            e
                + TestPackets.ipv4(
                    src: TestPackets.ip("10.200.0.11"), dst: TestPackets.snat, sport: 8080,
                    dport: 20000, flags: TCPFlags.ack),
            TestPackets.arpRequest(target: TestPackets.vip),
            e + TestPackets.ipv4(flags: TCPFlags.ack, payload: [UInt8](repeating: 0x42, count: 1400)),
        ]
    }()

    @Test func fuzzEveryParserAndMode() throws {
        let start = ContinuousClock.now
        var rng = SeededGenerator(seed: Self.seed)
        let snapshot = try TestPackets.pool(port: 80).snapshot()
        let service = VirtualServiceAddress(vip: TestPackets.vip, port: 80, proto: 6)
        let nat = NATRewriter(
            settings: NATSettings(service: service, snatAddress: TestPackets.snat, flowCapacity: 4096))
        let frameSettings = FrameServiceSettings(service: service, localMAC: TestPackets.lbMAC, flowCapacity: 4096)
        let dsr = DSRForwarder(settings: frameSettings)
        let vxlan = TunnelForwarder(
            settings: TunnelSettings(
                frame: frameSettings,
                kind: .vxlan(
                    Encapsulation.VXLAN(
                        vni: 42, innerDestinationMAC: TestPackets.lbMAC, innerSourceMAC: TestPackets.lbMAC)
                ), localAddress: TestPackets.lb))
        let ipip = TunnelForwarder(
            settings: TunnelSettings(frame: frameSettings, kind: .ipip, localAddress: TestPackets.lb))
        // VXLAN into the TAP device: whole super-frames with the tunnel virtio_net_hdr.
        let vxlanTAP = TunnelForwarder(
            settings: TunnelSettings(
                frame: frameSettings, kind: vxlan.settings.kind, localAddress: TestPackets.lb,
                output: .tap(mac: TestPackets.lbMAC)))
        // IPIP into its TAP (the tcx program encapsulates): whole super-frames with a plain virtio_net_hdr.
        let ipipTAP = TunnelForwarder(
            settings: TunnelSettings(
                frame: frameSettings, kind: .ipip, localAddress: TestPackets.lb,
                output: .ipipTAP(mac: TestPackets.lbMAC)
            ))

        // Enough for the TAP path (outer headers, Ethernet and virtio_net_hdr before the IP header).
        let headroom = vxlanTAP.settings.headroom
        var buffer = [UInt8](repeating: 0, count: headroom + 2048)
        var scratch = [UInt8](repeating: 0, count: 70000)
        var verdicts = [String: Int]()
        var emittedBytes = 0

        for i in 0..<Self.iterations {
            let length = makeFrame(into: &buffer, at: headroom, rng: &rng)
            let mode = i % 4
            let now = UInt64(i) * 1_000_000
            let offload = randomOffload(&rng)
            let verdict: PacketVerdict = buffer.withPacket { p in
                scratch.withPacket { s in
                    switch mode {
                    case 0:
                        // NAT sees L3 packets: skip the Ethernet header.
                        let l3 = max(0, length - 14)
                        return nat.process(p, start: headroom + 14, length: l3, snapshot: snapshot, now: now)
                    case 1:
                        return dsr.process(p, frameStart: headroom, length: length, snapshot: snapshot, now: now) {
                            _ in TestPackets.clientMAC
                        }
                    default:
                        let forwarder = mode == 2 ? (i % 8 == 2 ? vxlanTAP : vxlan) : (i % 8 == 3 ? ipipTAP : ipip)
                        return forwarder.process(
                            p, frameStart: headroom, length: length, offload: offload, snapshot: snapshot, now: now,
                            scratch: s
                        ) { _, range in emittedBytes &+= range.count }
                    }
                }
            }
            // The standalone parsers on the same bytes.
            buffer.withPacket { p in
                _ = try? VirtioNetHeader(p, at: headroom + length - 10)
                _ = try? ARP.parse(
                    PacketBytes(UnsafeMutableRawBufferPointer(rebasing: p.raw[headroom...])), length: length)
                _ = try? Encapsulation.parseIPIP(p, at: headroom + 14, limit: headroom + length)
                _ = try? Encapsulation.parseVXLAN(p, at: headroom + 14, limit: headroom + length)
                // The decapsulator's decision last: it writes its header into the frame.
                if let offload {
                    // Half the time as an IPIP frame (protocol 4, checksum fixed): the inner parse sees the rest.
                    let ip = headroom + 14
                    let headerLength = length >= 34 ? Int(p.u8(ip) & 0x0F) * 4 : 0
                    if i % 2 == 0, headerLength >= 20, 14 + headerLength <= length {
                        p.setU8(ip + 9, 4)
                        IPv4Header.setChecksum(p, at: ip, headerLength: headerLength)
                    }
                    _ = try? IPIPDecapsulation.prepare(
                        p, frameStart: headroom, length: length, offload: offload, isLocal: { _ in true })
                }
            }
            let name: String
            switch verdict {
            case .forward: name = "forward"
            case .reply: name = "reply"
            case .emitted: name = "emitted"
            case .drop(let reason): name = reason.description
            }
            verdicts[name, default: 0] += 1
        }
        let elapsed = ContinuousClock.now - start
        print(
            "fuzz: \(Self.iterations) packets (seed \(Self.seed)) in \(elapsed): \(verdicts.sorted { $0.key < $1.key })"
        )
        #expect(verdicts.values.reduce(0, +) == Self.iterations)
        // The corpus reaches the deep paths, not only the first length check.
        if Self.iterations >= 100_000 {
            for expected in ["forward", "emitted", "reply", "truncated", "bad_checksum", "not_for_vip"] {
                #expect(verdicts[expected, default: 0] > 0, "no \(expected) verdict: \(verdicts)")
            }
        }
        let totalDrops =
            nat.drops.total + dsr.drops.total + vxlan.drops.total + ipip.drops.total + vxlanTAP.drops.total
            + ipipTAP.drops.total
        if Self.iterations >= 100_000 {
            #expect(vxlanTAP.counters.gsoFramesWhole > 0, "the TAP path saw whole super-frames")
            #expect(ipipTAP.counters.gsoFramesWhole > 0, "the IPIP TAP path saw whole super-frames")
        }
        #expect(
            Int(totalDrops)
                == verdicts.filter { !["forward", "reply", "emitted"].contains($0.key) }.values.reduce(0, +))
        #expect(nat.flows.count <= 4096 && dsr.pinning.flows.count <= 4096)
    }

    /// Writes a frame at `offset` and returns its length: a quarter random bytes, the rest a mutated template.
    func makeFrame(into buffer: inout [UInt8], at offset: Int, rng: inout SeededGenerator) -> Int {
        let capacity = buffer.count - offset
        if Int.random(in: 0..<4, using: &rng) == 0 {
            let length = Int.random(in: 0...200, using: &rng)
            for j in 0..<length { buffer[offset + j] = UInt8.random(in: 0...255, using: &rng) }
            // Often make it look like IPv4 so deeper checks run.
            if length > 15 && Bool.random(using: &rng) {
                buffer[offset + 12] = 0x08
                buffer[offset + 13] = 0x00
                buffer[offset + 14] = 0x45
            }
            return length
        }
        let template = Self.templates[Int.random(in: 0..<Self.templates.count, using: &rng)]
        for j in 0..<template.count { buffer[offset + j] = template[j] }
        var length = template.count
        let mutations = Int.random(in: 0...4, using: &rng)
        for _ in 0..<mutations {
            switch Int.random(in: 0..<6, using: &rng) {
            case 0, 1:  // flip a byte in the headers, where it matters most
                guard length > 0 else { continue }
                let at = Int.random(in: 0..<min(length, 80), using: &rng)
                buffer[offset + at] = UInt8.random(in: 0...255, using: &rng)
            case 2:  // truncate
                length = Int.random(in: 0...length, using: &rng)
            case 3:  // extend with garbage
                let extra = Int.random(in: 0...64, using: &rng)
                for j in 0..<extra where length + j < capacity {
                    buffer[offset + length + j] = UInt8.random(in: 0...255, using: &rng)
                }
                length = min(capacity, length + extra)
            case 4:  // an extreme length field (IP total, UDP length or TCP data offset)
                let field = [16, 17, 38, 39, 46][Int.random(in: 0..<5, using: &rng)]
                if field < length {
                    buffer[offset + field] = [0, 0xFF, 0x14, 0x05][Int.random(in: 0..<4, using: &rng)]
                }
            default:  // IHL / version nibble
                if length > 14 { buffer[offset + 14] = UInt8.random(in: 0x40...0x4F, using: &rng) }
            }
        }
        // Keep the IP header checksum valid most of the time so the mutations reach the transport code.
        if length >= 34 && Int.random(in: 0..<4, using: &rng) != 0 {
            let ihl = Int(buffer[offset + 14] & 0x0F) * 4
            if ihl >= 20 && 14 + ihl <= length {
                buffer[offset + 24] = 0
                buffer[offset + 25] = 0
                let c = TestPackets.referenceChecksum(Array(buffer[(offset + 14)..<(offset + 14 + ihl)]))
                buffer[offset + 24] = UInt8(c >> 8)
                buffer[offset + 25] = UInt8(c & 0xFF)
            }
        }
        return length
    }

    func randomOffload(_ rng: inout SeededGenerator) -> VirtioNetHeader? {
        switch Int.random(in: 0..<4, using: &rng) {
        case 0: return nil
        case 1: return VirtioNetHeader()
        case 2:
            return VirtioNetHeader(
                flags: 1, checksumStart: UInt16.random(in: 0...80, using: &rng),
                checksumOffset: UInt16.random(in: 0...40, using: &rng))
        default:
            return VirtioNetHeader(
                flags: UInt8.random(in: 0...1, using: &rng),
                gsoType: [VirtioNetHeader.gsoTCPv4, VirtioNetHeader.gsoTCPv4 | 0x80, VirtioNetHeader.gsoUDP, 0x7F][
                    Int.random(in: 0..<4, using: &rng)],
                gsoSize: UInt16.random(in: 0...1600, using: &rng), checksumStart: 34, checksumOffset: 16)
        }
    }
}
