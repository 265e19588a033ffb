/// IP protocol numbers the packet plane knows.
public enum IPProtocolNumber {
    public static let icmp: UInt8 = 1
    public static let ipip: UInt8 = 4
    public static let tcp: UInt8 = 6
    public static let udp: UInt8 = 17
}

/// The fields of a validated IPv4 header, with offsets into the buffer it was parsed from.
public struct IPv4Info: Equatable, Sendable {
    /// Offset of the IP header in the buffer.
    public var offset: Int
    public var headerLength: Int
    public var totalLength: Int
    public var proto: UInt8
    public var source: UInt32
    public var destination: UInt32
    public var identification: UInt16
    public var ttl: UInt8
    /// Don't Fragment is set.
    public var dontFragment: Bool

    /// Offset of the transport header.
    public var payloadOffset: Int { offset + headerLength }
    public var payloadLength: Int { totalLength - headerLength }
    /// One past the last byte of the IP packet (link-layer padding after it is ignored).
    public var end: Int { offset + totalLength }
}

/// IPv4 headers (RFC 791): validation, in-place field updates, building outer headers.
public enum IPv4Header {
    public static let minLength = 20
    public static let totalLengthOffset = 2
    public static let identificationOffset = 4
    public static let flagsOffset = 6
    public static let ttlOffset = 8
    public static let protocolOffset = 9
    public static let checksumOffset = 10
    public static let sourceOffset = 12
    public static let destinationOffset = 16

    /// Validates the IPv4 header at `offset` of `p`, whose valid bytes end at `limit`.
    /// Checks version, IHL, total length against the buffer, the header checksum (when asked) and
    /// rejects fragments (ports only exist in the first one and we do not reassemble).
    public static func parse(
        _ p: PacketBytes, at offset: Int, limit: Int, verifyChecksum: Bool = true, allowTotalLengthZero: Bool = false
    ) throws(DropReason) -> IPv4Info {
        guard offset >= 0, limit <= p.count, offset + minLength <= limit else { throw .truncated }
        let versionIHL = p.u8(offset)
        guard versionIHL >> 4 == 4 else { throw .badVersion }
        let headerLength = Int(versionIHL & 0x0F) * 4
        guard headerLength >= minLength else { throw .badIHL }
        guard offset + headerLength <= limit else { throw .truncated }
        var totalLength = Int(p.u16(offset + totalLengthOffset))
        if totalLength == 0 && allowTotalLengthZero {
            // Big TCP / GSO super-frames above 64 KiB carry 0 here; the frame length is the truth.
            totalLength = limit - offset
        }
        guard totalLength >= headerLength, offset + totalLength <= limit else { throw .badTotalLength }
        if verifyChecksum {
            let sum = Checksum.sum(p.slice(offset..<(offset + headerLength)))
            guard Checksum.fold(sum) == 0xFFFF else { throw .badChecksum }
        }
        let flags = p.u16(offset + flagsOffset)
        // MF set or a non-zero fragment offset.
        guard flags & 0x3FFF == 0 else { throw .fragment }
        return IPv4Info(
            offset: offset, headerLength: headerLength, totalLength: totalLength, proto: p.u8(offset + protocolOffset),
            source: p.u32(offset + sourceOffset), destination: p.u32(offset + destinationOffset),
            identification: p.u16(offset + identificationOffset), ttl: p.u8(offset + ttlOffset),
            dontFragment: flags & 0x4000 != 0)
    }

    /// Recomputes the header checksum from scratch.
    public static func setChecksum(_ p: PacketBytes, at offset: Int, headerLength: Int) {
        p.setU16(offset + checksumOffset, 0)
        p.setU16(offset + checksumOffset, Checksum.finish(Checksum.sum(p.slice(offset..<(offset + headerLength)))))
    }

    /// Writes a 20-byte header without options at `offset` (the caller checked that it fits), checksum included.
    public static func write(
        into p: PacketBytes, at offset: Int, totalLength: Int, identification: UInt16, dontFragment: Bool,
        ttl: UInt8, proto: UInt8, source: UInt32, destination: UInt32, tos: UInt8 = 0
    ) {
        p.setU8(offset, 0x45)
        p.setU8(offset + 1, tos)
        p.setU16(offset + totalLengthOffset, UInt16(truncatingIfNeeded: totalLength))
        p.setU16(offset + identificationOffset, identification)
        p.setU16(offset + flagsOffset, dontFragment ? 0x4000 : 0)
        p.setU8(offset + ttlOffset, ttl)
        p.setU8(offset + protocolOffset, proto)
        p.setU32(offset + sourceOffset, source)
        p.setU32(offset + destinationOffset, destination)
        setChecksum(p, at: offset, headerLength: minLength)
    }

    /// Replaces the source or destination address and updates the header checksum incrementally.
    /// Returns nothing: the transport checksum (pseudo-header) is the caller's, see `TransportHeader`.
    public static func rewriteAddress(_ p: PacketBytes, at offset: Int, field: Int, to new: UInt32) {
        let old = p.u32(offset + field)
        guard old != new else { return }
        p.setU32(offset + field, new)
        p.setU16(offset + checksumOffset, Checksum.update(p.u16(offset + checksumOffset), old: old, new: new))
    }
}
