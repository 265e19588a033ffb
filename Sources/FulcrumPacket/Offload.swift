/// The `virtio_net_hdr` that AF_PACKET with `PACKET_VNET_HDR` puts before every frame: the kernel's
/// checksum-offload and GSO metadata (little-endian on the hosts we run on).
public struct VirtioNetHeader: Equatable, Sendable {
    public static let length = 10
    public static let needsChecksum: UInt8 = 1
    public static let gsoNone: UInt8 = 0
    public static let gsoTCPv4: UInt8 = 1
    public static let gsoUDP: UInt8 = 3
    public static let gsoTCPv6: UInt8 = 4
    public static let gsoECN: UInt8 = 0x80

    public var flags: UInt8
    public var gsoType: UInt8
    public var headerLength: UInt16
    public var gsoSize: UInt16
    /// Where checksumming starts, from the start of the Ethernet frame.
    public var checksumStart: UInt16
    /// Where the checksum goes, from `checksumStart`.
    public var checksumOffset: UInt16

    public init(
        flags: UInt8 = 0, gsoType: UInt8 = 0, headerLength: UInt16 = 0, gsoSize: UInt16 = 0,
        checksumStart: UInt16 = 0, checksumOffset: UInt16 = 0
    ) {
        self.flags = flags
        self.gsoType = gsoType
        self.headerLength = headerLength
        self.gsoSize = gsoSize
        self.checksumStart = checksumStart
        self.checksumOffset = checksumOffset
    }

    /// Reads the header at `offset` (10 bytes must be there).
    public init(_ p: PacketBytes, at offset: Int) throws(DropReason) {
        guard offset >= 0, offset + Self.length <= p.count else { throw .truncated }
        func le16(_ o: Int) -> UInt16 { UInt16(p.u8(offset + o)) | UInt16(p.u8(offset + o + 1)) << 8 }
        self.init(
            flags: p.u8(offset), gsoType: p.u8(offset + 1), headerLength: le16(2), gsoSize: le16(4),
            checksumStart: le16(6), checksumOffset: le16(8))
    }

    /// Writes the header at `offset`.
    public func write(into p: PacketBytes, at offset: Int) {
        func le16(_ o: Int, _ v: UInt16) {
            p.setU8(offset + o, UInt8(truncatingIfNeeded: v))
            p.setU8(offset + o + 1, UInt8(truncatingIfNeeded: v >> 8))
        }
        p.setU8(offset, flags)
        p.setU8(offset + 1, gsoType)
        le16(2, headerLength)
        le16(4, gsoSize)
        le16(6, checksumStart)
        le16(8, checksumOffset)
    }

    public var isGSO: Bool { gsoType & ~Self.gsoECN != Self.gsoNone }

    /// For a packet `ip` re-framed to start at `newBase` (it arrived in a frame starting at `oldBase`): a header
    /// without GSO that keeps this one's partial checksum (NEEDS_CSUM, its start moved to the new frame), or an
    /// empty one when there is none. Throws `.badOffloadHeader` when the checksum would not lie in `ip`'s payload.
    public func partialChecksumMoved(from oldBase: Int, to newBase: Int, packet ip: IPv4Info) throws(DropReason) -> Self
    {
        guard flags & Self.needsChecksum != 0 else { return Self() }
        let start = oldBase + Int(checksumStart)
        guard start >= ip.payloadOffset, start + Int(checksumOffset) + 2 <= ip.end else { throw .badOffloadHeader }
        return Self(
            flags: Self.needsChecksum, checksumStart: UInt16(start - newBase), checksumOffset: checksumOffset)
    }
}

/// What the kernel would have done on a real NIC: finish a CHECKSUM_PARTIAL and split a GSO
/// super-frame, so the packet can leave through a path without offloads (a UDP or raw socket).
public enum Offload {
    /// Smallest MSS we split to; a smaller `gso_size` is treated as a corrupt header (it also bounds
    /// the work one frame can cause).
    public static let minimumSegmentSize = 64

    /// Finishes a partial checksum: the field holds the pseudo-header sum, the result covers
    /// `frameStart + checksumStart ..< end`.
    public static func finishPartialChecksum(
        _ p: PacketBytes, frameStart: Int, end: Int, header h: VirtioNetHeader
    ) throws(DropReason) {
        let start = frameStart + Int(h.checksumStart)
        let field = start + Int(h.checksumOffset)
        guard end <= p.count, start < end, field + 2 <= end else { throw .badOffloadHeader }
        var c = Checksum.finish(Checksum.sum(p.slice(start..<end)))
        // 0 would mean "no checksum" for UDP; 0xFFFF is the same value for TCP.
        if c == 0 { c = 0xFFFF }
        p.setU16(field, c)
    }

    /// Sets the TCP/UDP checksum field of a packet with a partial checksum (`VirtioNetHeader.needsChecksum`)
    /// to the pseudo-header sum of its current addresses and length, as Linux's `tcp_v4_check` leaves it
    /// for the device to finish. Called after NAT changed addresses and ports: ports are covered by the
    /// final checksum (computed later over the segment), so only the pseudo-header part is ours to fix.
    public static func refreshPseudoHeaderChecksum(_ p: PacketBytes, ip: IPv4Info, transport: TransportInfo) {
        guard ip.proto == IPProtocolNumber.tcp || ip.proto == IPProtocolNumber.udp else { return }
        let pseudo = Checksum.pseudoHeader(
            source: ip.source, destination: ip.destination, protocol: ip.proto, length: ip.payloadLength)
        p.setU16(transport.checksumOffset, UInt16(truncatingIfNeeded: Checksum.fold(pseudo)))
    }

    /// Splits a TCP/IPv4 super-packet (`ip`, `tcp` parsed from `p`) into segments of at most `mss` payload
    /// bytes, as Linux's `tcp_gso_segment` does: consecutive IP ids, advancing sequence numbers, FIN and PSH
    /// only on the last segment, CWR only on the first, full IP and TCP checksums.
    ///
    /// Each segment is built in `scratch` with its IP header at `headroom` (room for outer headers before it)
    /// and handed to `emit` before the next overwrites it. Returns the number of segments.
    @discardableResult
    public static func segmentTCPv4(
        _ p: PacketBytes, ip: IPv4Info, tcp: TransportInfo, mss: Int, scratch: PacketBytes, headroom: Int,
        _ emit: (_ segment: IPv4Info) -> Void
    ) throws(DropReason) -> Int {
        guard ip.proto == IPProtocolNumber.tcp else { throw .unsupportedGSO }
        guard mss >= minimumSegmentSize else { throw .badOffloadHeader }
        let headers = ip.headerLength + tcp.headerLength
        let payloadStart = ip.offset + headers
        let payloadLength = ip.end - payloadStart
        guard payloadLength >= 0 else { throw .badTransportHeader }
        guard headroom >= 0, headroom + headers + min(mss, max(payloadLength, 0)) <= scratch.count else {
            throw .tooBig
        }
        let firstID = ip.identification
        let firstSeq = p.u32(tcp.offset + 4)
        let flags = tcp.tcpFlags
        var sent = 0
        var index = 0
        repeat {
            let chunk = min(mss, payloadLength - sent)
            let isLast = sent + chunk >= payloadLength
            let total = headers + chunk
            // Copy the headers, then the payload chunk.
            scratch.raw.baseAddress!.advanced(by: headroom).copyMemory(
                from: p.raw.baseAddress!.advanced(by: ip.offset), byteCount: headers)
            if chunk > 0 {
                scratch.raw.baseAddress!.advanced(by: headroom + headers).copyMemory(
                    from: p.raw.baseAddress!.advanced(by: payloadStart + sent), byteCount: chunk)
            }
            let o = headroom
            scratch.setU16(o + IPv4Header.totalLengthOffset, UInt16(total))
            scratch.setU16(o + IPv4Header.identificationOffset, firstID &+ UInt16(truncatingIfNeeded: index))
            let t = o + ip.headerLength
            scratch.setU32(t + 4, firstSeq &+ UInt32(sent))
            var f = flags
            if !isLast { f &= ~(TCPFlags.fin | TCPFlags.psh) }
            if index > 0 { f &= ~TCPFlags.cwr }
            scratch.setU8(t + 13, f)
            IPv4Header.setChecksum(scratch, at: o, headerLength: ip.headerLength)
            var segment = ip
            segment.offset = o
            segment.totalLength = total
            segment.identification = firstID &+ UInt16(truncatingIfNeeded: index)
            TransportHeader.setChecksum(scratch, ip: segment, checksumOffset: t + 16)
            emit(segment)
            sent += chunk
            index += 1
        } while sent < payloadLength
        return index
    }
}
