import FulcrumCore
import FulcrumPacket

/// Builds test packets byte by byte, independently of the code under test (checksums by `referenceChecksum`).
enum TestPackets {
    /// Runs `frame` through `forwarder` with `headroom` free bytes before it; returns the verdict and every
    /// packet or frame emitted.
    static func tunnelSend(
        _ forwarder: TunnelForwarder, frame: [UInt8], offload: VirtioNetHeader?, snapshot: PoolSnapshot,
        headroom: Int
    ) -> (PacketVerdict, [[UInt8]]) {
        var buffer = [UInt8](repeating: 0, count: headroom) + frame
        var scratch = [UInt8](repeating: 0, count: 70000)
        var out: [[UInt8]] = []
        let verdict = buffer.withPacket { p in
            scratch.withPacket { s in
                forwarder.process(
                    p, frameStart: headroom, length: frame.count, offload: offload, snapshot: snapshot, now: 1,
                    scratch: s
                ) { buf, range in out.append(Array(buf.slice(range))) }
            }
        }
        return (verdict, out)
    }

    static let clientMAC = MACAddress(0x02, 0, 0, 0, 0, 0x10)
    static let lbMAC = MACAddress(0x02, 0, 0, 0, 0, 0x02)
    static let client = ip("10.200.0.10")
    static let vip = ip("10.200.0.100")
    static let snat = ip("10.200.0.200")
    static let lb = ip("10.200.0.2")

    static func ip(_ text: String) -> UInt32 {
        guard case .v4(let a) = IPAddress(text)! else { fatalError("not IPv4: \(text)") }
        return a
    }

    /// Plain RFC 1071, 16 bits at a time: the reference the fast implementation is checked against.
    static func referenceChecksum(_ bytes: [UInt8], initial: UInt32 = 0) -> UInt16 {
        var sum = initial
        var i = 0
        while i + 1 < bytes.count {
            sum += UInt32(bytes[i]) << 8 | UInt32(bytes[i + 1])
            i += 2
        }
        if i < bytes.count { sum += UInt32(bytes[i]) << 8 }
        while sum >> 16 != 0 { sum = (sum & 0xFFFF) + (sum >> 16) }
        return ~UInt16(sum)
    }

    static func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xFF)] }
    static func be32(_ v: UInt32) -> [UInt8] {
        [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)]
    }

    static func pseudo(_ src: UInt32, _ dst: UInt32, _ proto: UInt8, _ length: Int) -> UInt32 {
        (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + UInt32(proto) + UInt32(length)
    }

    /// An IPv4 packet with a TCP or UDP payload and correct checksums.
    static func ipv4(
        src: UInt32 = client, dst: UInt32 = vip, proto: UInt8 = 6, sport: UInt16 = 40000, dport: UInt16 = 80,
        flags: UInt8 = 0x02, seq: UInt32 = 1000, payload: [UInt8] = [], id: UInt16 = 7, df: Bool = true,
        tos: UInt8 = 0
    ) -> [UInt8] {
        var l4: [UInt8]
        if proto == 6 {
            l4 = be16(sport) + be16(dport) + be32(seq) + be32(0) + [0x50, flags] + be16(65535) + [0, 0, 0, 0]
        } else {
            l4 = be16(sport) + be16(dport) + be16(UInt16(8 + payload.count)) + [0, 0]
        }
        l4 += payload
        let csumAt = proto == 6 ? 16 : 6
        var c = referenceChecksum(l4, initial: pseudo(src, dst, proto, l4.count))
        if proto == 17 && c == 0 { c = 0xFFFF }
        l4[csumAt] = UInt8(c >> 8)
        l4[csumAt + 1] = UInt8(c & 0xFF)
        var h: [UInt8] = [0x45, tos] + be16(UInt16(20 + l4.count)) + be16(id) + (df ? [0x40, 0] : [0, 0])
        h += [64, proto, 0, 0] + be32(src) + be32(dst)
        let hc = referenceChecksum(h)
        h[10] = UInt8(hc >> 8)
        h[11] = UInt8(hc & 0xFF)
        return h + l4
    }

    static func ethernet(dst: MACAddress = lbMAC, src: MACAddress = clientMAC, type: UInt16 = 0x0800) -> [UInt8] {
        dst.array + src.array + be16(type)
    }

    static func arpRequest(target: UInt32, senderIP: UInt32 = client, senderMAC: MACAddress = clientMAC) -> [UInt8] {
        ethernet(dst: .broadcast, src: senderMAC, type: 0x0806) + [0, 1, 8, 0, 6, 4, 0, 1] + senderMAC.array
            + be32(senderIP) + [0, 0, 0, 0, 0, 0] + be32(target)
    }

    /// True when the IPv4 header checksum and the TCP/UDP checksum of `packet` (starting at `offset`) verify.
    static func checksumsValid(_ packet: [UInt8], at offset: Int = 0) -> Bool {
        let ihl = Int(packet[offset] & 0x0F) * 4
        let total = Int(packet[offset + 2]) << 8 | Int(packet[offset + 3])
        guard referenceChecksum(Array(packet[offset..<(offset + ihl)])) == 0 else { return false }
        let proto = packet[offset + 9]
        let src = read32(packet, offset + 12)
        let dst = read32(packet, offset + 16)
        let l4 = Array(packet[(offset + ihl)..<(offset + total)])
        if proto == 17 && l4[6] == 0 && l4[7] == 0 { return true }
        return referenceChecksum(l4, initial: pseudo(src, dst, proto, l4.count)) == 0
    }

    static func read16(_ b: [UInt8], _ o: Int) -> UInt16 { UInt16(b[o]) << 8 | UInt16(b[o + 1]) }
    static func read32(_ b: [UInt8], _ o: Int) -> UInt32 {
        UInt32(b[o]) << 24 | UInt32(b[o + 1]) << 16 | UInt32(b[o + 2]) << 8 | UInt32(b[o + 3])
    }

    /// A pool of three backends on port 8080 with Maglev, as a virtual service uses it.
    static func pool(
        _ addresses: [String] = ["10.200.0.11", "10.200.0.12", "10.200.0.13"], port: UInt16 = 8080
    )
        throws -> Pool
    {
        try Pool(
            name: "vs", settings: PoolSettings(algorithm: .maglev),
            backends: addresses.map { BackendSpec(endpoint: Endpoint(address: IPAddress($0)!, port: port)) }, now: 0)
    }
}

/// A deterministic generator (SplitMix64) so failures reproduce from the seed.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

extension Array where Element == UInt8 {
    /// Runs `body` with a `PacketBytes` view of the array.
    /// Typed throws end to end: a typed-throws closure through a `rethrows` function crashes the 6.3 compiler.
    mutating func withPacket<R, E: Error>(_ body: (PacketBytes) throws(E) -> R) throws(E) -> R {
        let result: Result<R, E> = withUnsafeMutableBytes { raw in
            do throws(E) {
                return .success(try body(PacketBytes(raw)))
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }
}
