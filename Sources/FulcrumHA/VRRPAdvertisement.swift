import FulcrumCore
import FulcrumPacket

/// A VRRPv3 advertisement for IPv4 (RFC 5798 §5.1): the VRRP message that follows the IPv4 header.
///
/// ```
///  0                   1                   2                   3
/// |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
/// |(rsvd) |     Max Adver Int     |          Checksum             |
/// |                       IPv4 Address(es)                        |
/// ```
/// The checksum covers an IPv4 pseudo-header (source, destination, zero, protocol 112, VRRP length) and
/// the message (§5.2.8), so encoding needs the addresses the IP header will carry.
public struct VRRPAdvertisement: Sendable, Equatable {
    /// Why a value cannot be put on the wire.
    public enum InvalidField: Error, Equatable, Sendable {
        case virtualRouterId(Int)
        case priority(Int)
        case maxAdvertInterval(Int)
        case addressCount(Int)
        case notIPv4(IPAddress)
    }

    public static let version: UInt8 = 3
    /// The only type VRRPv3 defines: ADVERTISEMENT.
    public static let typeAdvertisement: UInt8 = 1
    /// Version, type, VRID, priority, count, interval, checksum.
    public static let headerLength = 8
    /// The interval field has 12 bits of centiseconds: 10 ms ... 40.95 s.
    public static let maxIntervalCentiseconds: UInt16 = 0x0FFF

    /// 1...255.
    public let virtualRouterId: UInt8
    /// 0 (the master resigns) ... 255 (the address owner).
    public let priority: UInt8
    /// Centiseconds between adverts, 1...4095.
    public let maxAdvertInterval: UInt16
    /// The virtual addresses, IPv4, 1...255 of them when sent by us (a received advert is checked separately).
    public let addresses: [IPAddress]

    /// Checks every field against what the wire can carry.
    public init(
        virtualRouterId: Int, priority: Int, maxAdvertInterval: Int, addresses: [IPAddress]
    )
        throws(InvalidField)
    {
        guard (1...255).contains(virtualRouterId) else { throw .virtualRouterId(virtualRouterId) }
        guard (0...255).contains(priority) else { throw .priority(priority) }
        guard (1...Int(Self.maxIntervalCentiseconds)).contains(maxAdvertInterval) else {
            throw .maxAdvertInterval(maxAdvertInterval)
        }
        guard (1...255).contains(addresses.count) else { throw .addressCount(addresses.count) }
        if let bad = addresses.first(where: { !$0.isIPv4 }) { throw .notIPv4(bad) }
        self.virtualRouterId = UInt8(virtualRouterId)
        self.priority = UInt8(priority)
        self.maxAdvertInterval = UInt16(maxAdvertInterval)
        self.addresses = addresses
    }

    /// Decoded fields, already validated by `VRRPPacketValidator`.
    init(uncheckedVirtualRouterId: UInt8, priority: UInt8, maxAdvertInterval: UInt16, addresses: [IPAddress]) {
        self.virtualRouterId = uncheckedVirtualRouterId
        self.priority = priority
        self.maxAdvertInterval = maxAdvertInterval
        self.addresses = addresses
    }

    /// The same advert with another priority (a resign advert is priority 0; tracking changes it too).
    public func with(priority: UInt8) -> VRRPAdvertisement {
        VRRPAdvertisement(
            uncheckedVirtualRouterId: virtualRouterId, priority: priority, maxAdvertInterval: maxAdvertInterval,
            addresses: addresses)
    }

    /// Length of the VRRP message: 8 bytes plus 4 per address.
    public var encodedLength: Int { Self.headerLength + 4 * addresses.count }

    /// The VRRP message with its checksum, for an IPv4 packet from `source` to `destination` (224.0.0.18, or
    /// a unicast peer). Both must be IPv4; otherwise the checksum would be meaningless and nil is returned.
    public func encode(source: IPAddress, destination: IPAddress) -> [UInt8]? {
        guard case .v4(let src) = source, case .v4(let dst) = destination else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(encodedLength)
        out.append(Self.version << 4 | Self.typeAdvertisement)
        out.append(virtualRouterId)
        out.append(priority)
        out.append(UInt8(addresses.count))
        // The top four bits are reserved and sent as zero.
        let interval = maxAdvertInterval & Self.maxIntervalCentiseconds
        out.append(UInt8(interval >> 8))
        out.append(UInt8(truncatingIfNeeded: interval))
        out.append(0)
        out.append(0)
        for address in addresses { out.append(contentsOf: address.bytes) }
        let checksum = Self.checksum(source: src, destination: dst, message: out)
        out[6] = UInt8(checksum >> 8)
        out[7] = UInt8(truncatingIfNeeded: checksum)
        return out
    }

    /// A whole IPv4 packet carrying the advert (header with TTL `ttl`, protocol 112, header checksum), as it
    /// appears on the wire. The transport lets the kernel build the header; this serves tests and tools that
    /// need to send exactly chosen (also wrong) headers.
    public func encodePacket(source: IPAddress, destination: IPAddress, ttl: UInt8 = FulcrumHA.vrrpTTL) -> [UInt8]? {
        guard let message = encode(source: source, destination: destination) else { return nil }
        let total = 20 + message.count
        // 0xC0: precedence "internetwork control", as keepalived and the RFC's examples send.
        var header: [UInt8] = [0x45, 0xC0, UInt8(total >> 8), UInt8(truncatingIfNeeded: total), 0, 0, 0, 0]
        header += [ttl, FulcrumHA.vrrpProtocol, 0, 0]
        header += source.bytes + destination.bytes
        let checksum = header.withUnsafeBytes { Checksum.finish(Checksum.sum($0)) }
        header[10] = UInt8(checksum >> 8)
        header[11] = UInt8(truncatingIfNeeded: checksum)
        return header + message
    }

    /// RFC 5798 §5.2.8: the Internet checksum over the IPv4 pseudo-header and the message. Computed over a
    /// message whose checksum field is filled in, it is 0.
    static func checksum(source: UInt32, destination: UInt32, message: some Collection<UInt8>) -> UInt16 {
        let pseudo = Checksum.pseudoHeader(
            source: source, destination: destination, protocol: FulcrumHA.vrrpProtocol, length: message.count)
        return Array(message).withUnsafeBytes { Checksum.finish(Checksum.sum($0, initial: pseudo)) }
    }
}
