import FulcrumCore

/// Why a received packet was not taken as an advert for our virtual router. Each is counted, never fatal.
public enum VRRPDropReason: String, Error, CaseIterable, Sendable, CustomStringConvertible {
    /// Shorter than an IPv4 header plus the fixed VRRP fields, or the IP total length overruns the buffer.
    case truncated = "truncated"
    /// IP version is not 4, or the header length field is below 20 or beyond the packet.
    case badIPHeader = "bad_ip_header"
    /// IP protocol is not 112.
    case wrongProtocol = "wrong_protocol"
    /// TTL is not 255: the packet may have crossed a router (RFC 5798 §7.1).
    case wrongTTL = "wrong_ttl"
    /// VRRP version is not 3.
    case wrongVersion = "wrong_version"
    /// VRRP type is not 1 (ADVERTISEMENT).
    case wrongType = "wrong_type"
    /// The VRRP length is not 8 + 4 × count.
    case lengthMismatch = "length_mismatch"
    /// The checksum over the pseudo-header and the message does not verify.
    case badChecksum = "bad_checksum"
    /// Max Adver Int is 0, which would make the Master_Down_Interval almost nothing.
    case zeroInterval = "zero_interval"
    /// Another virtual router on the same link.
    case vridMismatch = "vrid_mismatch"
    /// Our own advert, looped back (multicast loop, or a unicast peer list that names us).
    case ownAdvert = "own_advert"
    /// A non-owner advertises another number of addresses than we have configured (§7.1 says drop).
    case addressCountMismatch = "address_count_mismatch"
    /// A non-owner advertises other addresses than we have configured.
    case addressListMismatch = "address_list_mismatch"

    public var description: String { rawValue }
}

/// An advert that passed every check, with the IP header fields the state machine needs.
public struct VRRPReceivedAdvert: Sendable, Equatable {
    /// The sender's primary address: what ties between equal priorities are broken by.
    public var source: IPAddress
    public var destination: IPAddress
    public var advert: VRRPAdvertisement
}

/// Validates a received IPv4 packet (header included, as a raw socket delivers it) per RFC 5798 §7.1.
public struct VRRPPacketValidator: Sendable {
    public var virtualRouterId: UInt8
    /// The addresses we advertise; a non-owner advert must carry the same set.
    public var expectedAddresses: Set<IPAddress>
    /// Our own addresses: an advert from one of them is our own and ignored.
    public var localAddresses: Set<IPAddress>

    public init(virtualRouterId: UInt8, expectedAddresses: Set<IPAddress>, localAddresses: Set<IPAddress>) {
        self.virtualRouterId = virtualRouterId
        self.expectedAddresses = expectedAddresses
        self.localAddresses = localAddresses
    }

    /// Checks the packet in the order §7.1 gives (IP header, then the VRRP message, then whether it is for
    /// us) and returns the first failure. Any byte string is safe input.
    public func validate(_ packet: some RandomAccessCollection<UInt8>) -> Result<VRRPReceivedAdvert, VRRPDropReason> {
        let bytes = Array(packet)
        guard bytes.count >= 20 else { return .failure(.truncated) }
        guard bytes[0] >> 4 == 4 else { return .failure(.badIPHeader) }
        let headerLength = Int(bytes[0] & 0x0F) * 4
        guard headerLength >= 20, headerLength <= bytes.count else { return .failure(.badIPHeader) }
        let totalLength = Int(bytes[2]) << 8 | Int(bytes[3])
        guard totalLength >= headerLength else { return .failure(.badIPHeader) }
        guard totalLength <= bytes.count, totalLength - headerLength >= VRRPAdvertisement.headerLength else {
            return .failure(.truncated)
        }
        guard bytes[9] == FulcrumHA.vrrpProtocol else { return .failure(.wrongProtocol) }
        guard bytes[8] == FulcrumHA.vrrpTTL else { return .failure(.wrongTTL) }
        let source = Self.word(bytes, 12)
        let destination = Self.word(bytes, 16)

        // The IP total length bounds the message: bytes past it (link padding) are not ours.
        let message = bytes[headerLength..<totalLength]
        let m = message.startIndex
        guard message[m] >> 4 == VRRPAdvertisement.version else { return .failure(.wrongVersion) }
        guard message[m] & 0x0F == VRRPAdvertisement.typeAdvertisement else { return .failure(.wrongType) }
        let count = Int(message[m + 3])
        guard message.count == VRRPAdvertisement.headerLength + 4 * count else { return .failure(.lengthMismatch) }
        guard VRRPAdvertisement.checksum(source: source, destination: destination, message: message) == 0 else {
            return .failure(.badChecksum)
        }
        // The top four bits of the interval field are reserved: ignored on receipt.
        let interval =
            (UInt16(message[m + 4]) << 8 | UInt16(message[m + 5])) & VRRPAdvertisement.maxIntervalCentiseconds
        guard interval > 0 else { return .failure(.zeroInterval) }
        let vrid = message[m + 1]
        guard vrid == virtualRouterId else { return .failure(.vridMismatch) }
        let sourceAddress = IPAddress.v4(source)
        guard !localAddresses.contains(sourceAddress) else { return .failure(.ownAdvert) }

        let priority = message[m + 2]
        let addresses = (0..<count).map { IPAddress.v4(Self.word(bytes, headerLength + 8 + 4 * $0)) }
        // §7.1: a mismatch is a misconfiguration; only the address owner's (priority 255) advert is kept.
        if priority != 255 {
            guard count == expectedAddresses.count else { return .failure(.addressCountMismatch) }
            guard Set(addresses) == expectedAddresses else { return .failure(.addressListMismatch) }
        }
        let advert = VRRPAdvertisement(
            uncheckedVirtualRouterId: vrid, priority: priority, maxAdvertInterval: interval, addresses: addresses)
        return .success(VRRPReceivedAdvert(source: sourceAddress, destination: .v4(destination), advert: advert))
    }

    private static func word(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
        UInt32(bytes[offset]) << 24 | UInt32(bytes[offset + 1]) << 16 | UInt32(bytes[offset + 2]) << 8
            | UInt32(bytes[offset + 3])
    }
}

/// How many received packets were dropped, per reason; the transport keeps one and metrics read it.
public struct VRRPDropCounters: Sendable, Equatable {
    private var counts: [VRRPDropReason: UInt64] = [:]

    public init() {}

    public mutating func record(_ reason: VRRPDropReason) { counts[reason, default: 0] += 1 }

    public subscript(reason: VRRPDropReason) -> UInt64 { counts[reason, default: 0] }

    public var total: UInt64 { counts.values.reduce(0, +) }
}
