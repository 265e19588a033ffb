/// The backend side of IPIP (`fulcrum decap --ipip`, `IPIPDecapsulator`), pure: turns a received IPIP frame
/// into a TUN write — the inner packet with a `VirtioNetHeader` in front of it, written in place over the outer
/// headers, so one `write` delivers it.
///
/// What is trusted about the inner TCP/UDP checksum, from the `VirtioNetHeader` AF_PACKET gives with the frame
/// (the kernel fills it from the skb, `virtio_net_hdr_from_skb`):
/// - a **GSO** packet (gso_type TCPv4) only exists inside one host: built by a local stack or a veth peer, whose
///   checksum is partial, or merged by GRO from segments the NIC had verified, whose checksum field is stale.
///   Either way the field is not a checksum of the whole: it is set to the pseudo-header sum and the packet goes
///   to the TUN as a TCPv4 GSO write with NEEDS_CSUM, so the backend's TCP takes up to 64 KB per system call.
/// - a packet with **NEEDS_CSUM** (CHECKSUM_PARTIAL, from a local or veth sender) keeps it, its start moved to
///   the inner packet: the sender's stack left the pseudo-header sum, the TUN's reader (our kernel) accepts it.
/// - anything else (a full checksum, DATA_VALID or not) goes without flags: the kernel verifies it as it would
///   any received packet, exactly like the plain raw-socket path did.
public enum IPIPDecapsulation {
    /// What `prepare` made of a frame.
    public struct Prepared: Equatable, Sendable {
        /// Bytes to write into the TUN: the header, then the inner packet.
        public var range: Range<Int>
        /// The header written (for tests and counters).
        public var header: VirtioNetHeader
    }

    /// `p[frameStart ..< frameStart + length]` is an Ethernet frame received with `offload`; the outer IPv4
    /// header is checked (checksum, no fragment), must be protocol 4, be addressed to this host (`isLocal`: a
    /// packet socket also sees frames the kernel would forward) and carry an inner IPv4 packet. Throws the
    /// reason to count otherwise.
    public static func prepare(
        _ p: PacketBytes, frameStart: Int, length: Int, offload: VirtioNetHeader, isLocal: (UInt32) -> Bool
    ) throws(DropReason) -> Prepared {
        let end = frameStart + length
        guard frameStart >= 0, end <= p.count, length >= Ethernet.headerLength else { throw .truncated }
        guard p.u16(frameStart + 12) == Ethernet.typeIPv4 else { throw .unsupportedEtherType }
        let outer = try IPv4Header.parse(p, at: frameStart + Ethernet.headerLength, limit: end)
        guard outer.proto == IPProtocolNumber.ipip else { throw .unsupportedProtocol }
        guard isLocal(outer.destination) else { throw .notLocal }
        let inner = try IPv4Header.parse(p, at: outer.payloadOffset, limit: outer.end)
        return try prepare(p, inner: inner, offload: offload, checksumBase: frameStart)
    }

    /// For a packet whose outer header starts at `offset` and ends by `limit` (a reassembled packet from the raw
    /// socket: its checksum is complete, the kernel verifies it).
    public static func prepareWhole(_ p: PacketBytes, at offset: Int, limit: Int) throws(DropReason) -> Prepared {
        let inner = try Encapsulation.parseIPIP(p, at: offset, limit: limit)
        return try prepare(p, inner: inner, offload: VirtioNetHeader(), checksumBase: offset)
    }

    private static func prepare(
        _ p: PacketBytes, inner: IPv4Info, offload h: VirtioNetHeader, checksumBase: Int
    ) throws(DropReason) -> Prepared {
        let start = inner.offset - VirtioNetHeader.length
        guard start >= 0 else { throw .tooBig }
        let header: VirtioNetHeader
        if h.isGSO {
            guard h.gsoType & ~VirtioNetHeader.gsoECN == VirtioNetHeader.gsoTCPv4, inner.proto == IPProtocolNumber.tcp
            else { throw .unsupportedGSO }
            guard h.gsoSize > 0 else { throw .badOffloadHeader }
            let tcp = try TransportHeader.parse(p, ip: inner)
            Offload.refreshPseudoHeaderChecksum(p, ip: inner, transport: tcp)
            header = VirtioNetHeader(
                flags: VirtioNetHeader.needsChecksum, gsoType: h.gsoType,
                headerLength: UInt16(inner.headerLength + tcp.headerLength), gsoSize: h.gsoSize,
                checksumStart: UInt16(inner.headerLength), checksumOffset: 16)
        } else {
            header = try h.partialChecksumMoved(from: checksumBase, to: inner.offset, packet: inner)
        }
        header.write(into: p, at: start)
        return Prepared(range: start..<inner.end, header: header)
    }
}
