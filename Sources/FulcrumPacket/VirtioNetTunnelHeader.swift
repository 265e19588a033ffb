/// The 24-byte `virtio_net_hdr_v1_hash_tunnel` that a TUN/TAP device takes before every packet once it was
/// given `TUNSETVNETHDRSZ 24` and `TUN_F_UDP_TUNNEL_GSO` (Linux 6.17+): the 10-byte `VirtioNetHeader`, a
/// 16-bit `num_buffers`, 8 bytes of hash report (unused, zero), then the UDP-tunnel offsets. Every multi-byte
/// field is little-endian; every offset counts from the start of the frame (the outer Ethernet header on a TAP).
///
/// The kernel (`virtio_net_hdr_tnl_to_skb`) accepts a tunnel GSO packet only with `needsChecksum`, the inner
/// checksum fields pointing at the inner TCP header, and `outerTransportOffset >= 14 + 20` — it assumes an
/// Ethernet header, which is why the tunnel path writes to a TAP, not a TUN (where the same frame is EINVAL).
public struct VirtioNetTunnelHeader: Equatable, Sendable {
    public static let length = 24
    /// `gso_type` bit: the GSO packet is inside a UDP tunnel over IPv4 (`VIRTIO_NET_HDR_GSO_UDP_TUNNEL_IPV4`).
    public static let gsoUDPTunnelIPv4: UInt8 = 0x20
    /// `gso_type` bit: the same over IPv6 (`VIRTIO_NET_HDR_GSO_UDP_TUNNEL_IPV6`).
    public static let gsoUDPTunnelIPv6: UInt8 = 0x40
    /// `flags` bit: the outer UDP checksum is to be computed too (`VIRTIO_NET_HDR_F_UDP_TUNNEL_CSUM`); VXLAN
    /// over IPv4 leaves it zero (RFC 7348), so we never set it.
    public static let udpTunnelChecksum: UInt8 = 8

    /// The legacy part: flags, GSO type and size, header length, inner checksum start and offset.
    public var base: VirtioNetHeader
    /// Offset of the outer UDP header.
    public var outerTransportOffset: UInt16
    /// Offset of the inner network (IP) header.
    public var innerNetworkOffset: UInt16

    public init(
        base: VirtioNetHeader = VirtioNetHeader(), outerTransportOffset: UInt16 = 0, innerNetworkOffset: UInt16 = 0
    ) {
        self.base = base
        self.outerTransportOffset = outerTransportOffset
        self.innerNetworkOffset = innerNetworkOffset
    }

    /// The header for a VXLAN-over-IPv4 frame carrying a TCP/IPv4 GSO super-frame: the kernel segments the
    /// inner packet by `segmentSize` and replicates the outer headers (lengths, ids, checksums fixed per
    /// segment). Offsets are from the start of the frame; `ecn` keeps the inner CWR handling of TSO ECN.
    public static func vxlanTCPv4(
        outerTransportOffset: Int, innerNetworkOffset: Int, innerTransportOffset: Int, innerHeadersEnd: Int,
        segmentSize: UInt16, ecn: Bool
    ) -> VirtioNetTunnelHeader {
        VirtioNetTunnelHeader(
            base: VirtioNetHeader(
                flags: VirtioNetHeader.needsChecksum,
                gsoType: VirtioNetHeader.gsoTCPv4 | gsoUDPTunnelIPv4 | (ecn ? VirtioNetHeader.gsoECN : 0),
                headerLength: UInt16(innerHeadersEnd), gsoSize: segmentSize,
                checksumStart: UInt16(innerTransportOffset), checksumOffset: 16),
            outerTransportOffset: UInt16(outerTransportOffset), innerNetworkOffset: UInt16(innerNetworkOffset))
    }

    /// Writes the 24 bytes at `offset` (the caller checked that they fit).
    public func write(into p: PacketBytes, at offset: Int) {
        base.write(into: p, at: offset)
        // num_buffers and the hash report: unused on transmit.
        for k in (offset + VirtioNetHeader.length)..<(offset + 20) { p.setU8(k, 0) }
        p.setU8(offset + 20, UInt8(truncatingIfNeeded: outerTransportOffset))
        p.setU8(offset + 21, UInt8(truncatingIfNeeded: outerTransportOffset >> 8))
        p.setU8(offset + 22, UInt8(truncatingIfNeeded: innerNetworkOffset))
        p.setU8(offset + 23, UInt8(truncatingIfNeeded: innerNetworkOffset >> 8))
    }

    /// Reads the 24 bytes at `offset`.
    public init(_ p: PacketBytes, at offset: Int) throws(DropReason) {
        guard offset >= 0, offset + Self.length <= p.count else { throw .truncated }
        let base = try VirtioNetHeader(p, at: offset)
        self.init(
            base: base, outerTransportOffset: UInt16(p.u8(offset + 20)) | UInt16(p.u8(offset + 21)) << 8,
            innerNetworkOffset: UInt16(p.u8(offset + 22)) | UInt16(p.u8(offset + 23)) << 8)
    }
}
