import FulcrumCore

/// Outer headers for the tunnel modes, written into the headroom before an inner IPv4 packet.
public enum Encapsulation {
    /// Outer IPv4 header.
    public static let ipipOverhead = IPv4Header.minLength
    /// Outer IPv4 + UDP + VXLAN header + inner Ethernet header.
    public static let vxlanOverhead = IPv4Header.minLength + TransportHeader.udpLength + 8 + Ethernet.headerLength

    /// Writes an outer IPv4 header (protocol 4) right before `inner`; returns the range of the whole packet.
    /// The outer packet may be fragmented (DF clear); its TOS byte is copied from the inner one (ECN).
    public static func ipip(
        _ p: PacketBytes, inner: IPv4Info, source: UInt32, destination: UInt32, identification: UInt16,
        ttl: UInt8 = 64
    ) throws(DropReason) -> Range<Int> {
        let start = inner.offset - ipipOverhead
        guard start >= 0, inner.end <= p.count else { throw .tooBig }
        IPv4Header.write(
            into: p, at: start, totalLength: inner.totalLength + ipipOverhead, identification: identification,
            dontFragment: false, ttl: ttl, proto: IPProtocolNumber.ipip, source: source, destination: destination,
            tos: p.u8(inner.offset + 1))
        return start..<inner.end
    }

    /// VXLAN settings of the sender.
    public struct VXLAN: Sendable, Equatable {
        public var vni: UInt32
        public var destinationPort: UInt16
        /// Destination MAC of the inner frame: the MAC of the backends' vxlan device (the same on every
        /// backend, set with `ip link set vxlan0 address …`); a frame to another MAC is not delivered.
        public var innerDestinationMAC: MACAddress
        public var innerSourceMAC: MACAddress

        public init(
            vni: UInt32, destinationPort: UInt16 = 4789, innerDestinationMAC: MACAddress,
            innerSourceMAC: MACAddress
        ) {
            self.vni = vni
            self.destinationPort = destinationPort
            self.innerDestinationMAC = innerDestinationMAC
            self.innerSourceMAC = innerSourceMAC
        }
    }

    /// The UDP source port of a flow: from its hash, in the dynamic range (RFC 7348 §5), so ECMP routers
    /// between the balancer and the backends spread flows and keep each one on one path.
    public static func vxlanSourcePort(flowHash: UInt64) -> UInt16 {
        49152 + UInt16(truncatingIfNeeded: StableHash.reduce(flowHash, into: 16384))
    }

    /// Writes outer IPv4 / UDP / VXLAN / inner Ethernet before `inner`; returns the range of the whole packet.
    /// The outer UDP checksum is zero, as RFC 7348 recommends for IPv4.
    public static func vxlan(
        _ p: PacketBytes, inner: IPv4Info, settings: VXLAN, source: UInt32, destination: UInt32,
        sourcePort: UInt16, identification: UInt16, ttl: UInt8 = 64
    ) throws(DropReason) -> Range<Int> {
        let start = inner.offset - vxlanOverhead
        guard start >= 0, inner.end <= p.count else { throw .tooBig }
        let total = inner.totalLength + vxlanOverhead
        IPv4Header.write(
            into: p, at: start, totalLength: total, identification: identification, dontFragment: false, ttl: ttl,
            proto: IPProtocolNumber.udp, source: source, destination: destination, tos: p.u8(inner.offset + 1))
        let udp = start + IPv4Header.minLength
        p.setU16(udp, sourcePort)
        p.setU16(udp + 2, settings.destinationPort)
        p.setU16(udp + 4, UInt16(total - IPv4Header.minLength))
        p.setU16(udp + 6, 0)
        let vx = udp + TransportHeader.udpLength
        p.setU32(vx, 0x0800_0000)  // flags: VNI valid
        p.setU32(vx + 4, (settings.vni & 0xFF_FFFF) << 8)
        Ethernet.write(
            into: p, at: vx + 8, destination: settings.innerDestinationMAC, source: settings.innerSourceMAC,
            etherType: Ethernet.typeIPv4)
        return start..<inner.end
    }

    /// Parses a VXLAN packet (outer IPv4 at `offset`): the VNI and the offset of the inner Ethernet frame.
    public static func parseVXLAN(
        _ p: PacketBytes, at offset: Int, limit: Int
    ) throws(DropReason) -> (vni: UInt32, innerFrame: Range<Int>) {
        let ip = try IPv4Header.parse(p, at: offset, limit: limit)
        guard ip.proto == IPProtocolNumber.udp else { throw .unsupportedProtocol }
        let udp = try TransportHeader.parse(p, ip: ip)
        let vx = udp.offset + TransportHeader.udpLength
        guard vx + 8 + Ethernet.headerLength <= ip.end else { throw .truncated }
        guard p.u8(vx) & 0x08 != 0 else { throw .badTransportHeader }
        return (p.u32(vx + 4) >> 8, (vx + 8)..<ip.end)
    }

    /// Parses an IPIP packet (outer IPv4 at `offset`): the inner IPv4 packet (what `fulcrum decap` writes to its TUN).
    public static func parseIPIP(_ p: PacketBytes, at offset: Int, limit: Int) throws(DropReason) -> IPv4Info {
        let outer = try IPv4Header.parse(p, at: offset, limit: limit)
        guard outer.proto == IPProtocolNumber.ipip else { throw .unsupportedProtocol }
        return try IPv4Header.parse(p, at: outer.payloadOffset, limit: outer.end)
    }
}
