import FulcrumCore

/// TCP flag bits (byte 13 of the TCP header).
public enum TCPFlags {
    public static let fin: UInt8 = 0x01
    public static let syn: UInt8 = 0x02
    public static let rst: UInt8 = 0x04
    public static let psh: UInt8 = 0x08
    public static let ack: UInt8 = 0x10
    public static let urg: UInt8 = 0x20
    public static let ece: UInt8 = 0x40
    public static let cwr: UInt8 = 0x80
}

/// A connection's identity as the balancer sees one direction of it.
public struct FlowKey: Hashable, Sendable, CustomStringConvertible {
    public var source: UInt32
    public var destination: UInt32
    public var sourcePort: UInt16
    public var destinationPort: UInt16
    public var proto: UInt8

    public init(source: UInt32, destination: UInt32, sourcePort: UInt16, destinationPort: UInt16, proto: UInt8) {
        self.source = source
        self.destination = destination
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
        self.proto = proto
    }

    /// The key of packets going the other way.
    public var reversed: FlowKey {
        FlowKey(
            source: destination, destination: source, sourcePort: destinationPort, destinationPort: sourcePort,
            proto: proto)
    }

    /// The `StableHash` of this 5-tuple: the key every node (and Maglev) uses for the flow.
    public var stableHash: UInt64 {
        StableHash.hash(
            source: .v4(source), sourcePort: sourcePort, destination: .v4(destination),
            destinationPort: destinationPort, protocol: proto)
    }

    public var description: String {
        "\(IPAddress.v4(source)):\(sourcePort)->\(IPAddress.v4(destination)):\(destinationPort)/\(proto)"
    }
}

/// The transport header of a validated IPv4 packet.
public struct TransportInfo: Equatable, Sendable {
    public var offset: Int
    /// TCP: data offset × 4; UDP: 8; ICMP: 8.
    public var headerLength: Int
    public var sourcePort: UInt16
    public var destinationPort: UInt16
    /// TCP flags (0 for UDP and ICMP).
    public var tcpFlags: UInt8
    /// Offset of the checksum field in the buffer.
    public var checksumOffset: Int
}

/// TCP, UDP and ICMP headers: validation and in-place rewriting with incremental checksums.
public enum TransportHeader {
    public static let tcpMinLength = 20
    public static let udpLength = 8
    public static let icmpMinLength = 8

    /// Validates the TCP, UDP or ICMP header that follows `ip`. For ICMP echo the identifier stands in
    /// for both ports (so echo can be hashed); other protocols are `.unsupportedProtocol`.
    public static func parse(_ p: PacketBytes, ip: IPv4Info) throws(DropReason) -> TransportInfo {
        let o = ip.payloadOffset
        let length = ip.payloadLength
        switch ip.proto {
        case IPProtocolNumber.tcp:
            guard length >= tcpMinLength else { throw .truncated }
            let dataOffset = Int(p.u8(o + 12) >> 4) * 4
            guard dataOffset >= tcpMinLength, dataOffset <= length else { throw .badTransportHeader }
            return TransportInfo(
                offset: o, headerLength: dataOffset, sourcePort: p.u16(o), destinationPort: p.u16(o + 2),
                tcpFlags: p.u8(o + 13), checksumOffset: o + 16)
        case IPProtocolNumber.udp:
            guard length >= udpLength else { throw .truncated }
            let udpLen = Int(p.u16(o + 4))
            guard udpLen >= udpLength, udpLen <= length else { throw .badTransportHeader }
            return TransportInfo(
                offset: o, headerLength: udpLength, sourcePort: p.u16(o), destinationPort: p.u16(o + 2), tcpFlags: 0,
                checksumOffset: o + 6)
        case IPProtocolNumber.icmp:
            guard length >= icmpMinLength else { throw .truncated }
            let identifier = p.u16(o + 4)
            return TransportInfo(
                offset: o, headerLength: icmpMinLength, sourcePort: identifier, destinationPort: identifier,
                tcpFlags: 0, checksumOffset: o + 2)
        default:
            throw .unsupportedProtocol
        }
    }

    /// The flow key of a parsed packet.
    public static func flowKey(ip: IPv4Info, transport t: TransportInfo) -> FlowKey {
        FlowKey(
            source: ip.source, destination: ip.destination, sourcePort: t.sourcePort,
            destinationPort: t.destinationPort, proto: ip.proto)
    }

    /// Rewrites addresses and ports of a TCP or UDP packet in place, updating the IP header checksum and the
    /// transport checksum incrementally (RFC 1624): the pseudo-header covers the addresses.
    /// A UDP checksum of zero means "none" and stays zero.
    public static func rewrite(
        _ p: PacketBytes, ip: IPv4Info, transport t: TransportInfo, source: UInt32, destination: UInt32,
        sourcePort: UInt16, destinationPort: UInt16
    ) {
        let isUDP = ip.proto == IPProtocolNumber.udp
        var csum = p.u16(t.checksumOffset)
        let checksummed = !(isUDP && csum == 0)
        if checksummed && ip.proto != IPProtocolNumber.icmp {
            csum = Checksum.update(csum, old: ip.source, new: source)
            csum = Checksum.update(csum, old: ip.destination, new: destination)
        }
        if ip.proto == IPProtocolNumber.tcp || isUDP {
            if checksummed {
                csum = Checksum.update(csum, old: t.sourcePort, new: sourcePort)
                csum = Checksum.update(csum, old: t.destinationPort, new: destinationPort)
                if isUDP && csum == 0 { csum = 0xFFFF }
                p.setU16(t.checksumOffset, csum)
            }
            p.setU16(t.offset, sourcePort)
            p.setU16(t.offset + 2, destinationPort)
        }
        IPv4Header.rewriteAddress(p, at: ip.offset, field: IPv4Header.sourceOffset, to: source)
        IPv4Header.rewriteAddress(p, at: ip.offset, field: IPv4Header.destinationOffset, to: destination)
    }

    /// Recomputes a TCP or UDP checksum from scratch over the pseudo-header and the segment.
    public static func setChecksum(_ p: PacketBytes, ip: IPv4Info, checksumOffset: Int) {
        p.setU16(checksumOffset, 0)
        let pseudo = Checksum.pseudoHeader(
            source: ip.source, destination: ip.destination, protocol: ip.proto, length: ip.payloadLength)
        var c = Checksum.finish(Checksum.sum(p.slice(ip.payloadOffset..<ip.end), initial: pseudo))
        if ip.proto == IPProtocolNumber.udp && c == 0 { c = 0xFFFF }
        p.setU16(checksumOffset, c)
    }

    /// True when the TCP or UDP checksum verifies (a zero UDP checksum counts as valid: none was sent).
    public static func verifyChecksum(_ p: PacketBytes, ip: IPv4Info, transport t: TransportInfo) -> Bool {
        if ip.proto == IPProtocolNumber.udp && p.u16(t.checksumOffset) == 0 { return true }
        let pseudo: UInt32 =
            ip.proto == IPProtocolNumber.icmp
            ? 0
            : Checksum.pseudoHeader(
                source: ip.source, destination: ip.destination, protocol: ip.proto, length: ip.payloadLength)
        return Checksum.fold(Checksum.sum(p.slice(ip.payloadOffset..<ip.end), initial: pseudo)) == 0xFFFF
    }
}
