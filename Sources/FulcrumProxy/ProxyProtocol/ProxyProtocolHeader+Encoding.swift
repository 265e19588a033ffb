import FulcrumCore

extension ProxyProtocolHeader {
    /// The 12 bytes that open every version 2 header.
    public static let v2Signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]

    /// Version 1: `PROXY TCP4 src dst sport dport\r\n` (TCP6 likewise), or `PROXY UNKNOWN\r\n`.
    public func encodedV1() -> [UInt8] {
        guard let (source, destination, isIPv4) = addresses else {
            return Array("PROXY UNKNOWN\r\n".utf8)
        }
        let family = isIPv4 ? "TCP4" : "TCP6"
        let addresses = "\(Self.text(source.address)) \(Self.text(destination.address))"
        return Array("PROXY \(family) \(addresses) \(source.port) \(destination.port)\r\n".utf8)
    }

    /// An address as `inet_ntop` writes it: IPv4-mapped IPv6 ends in dotted decimal (`::ffff:192.0.2.1`).
    private static func text(_ address: IPAddress) -> String {
        if case .v6(0, let low) = address, low >> 32 == 0xFFFF {
            return "::ffff:\(IPAddress.v4(UInt32(truncatingIfNeeded: low)))"
        }
        return address.description
    }

    /// Version 2: signature, version 2 with command PROXY (0x21), family and transport (0x11 TCP over
    /// IPv4, 0x21 TCP over IPv6), the big-endian length of what follows, then source address, destination
    /// address, source port, destination port. Without addresses: command LOCAL (0x20), family UNSPEC,
    /// length 0, which tells the backend to use the connection's own addresses.
    public func encodedV2() -> [UInt8] {
        var bytes = Self.v2Signature
        guard let (source, destination, isIPv4) = addresses else {
            bytes += [0x20, 0x00, 0x00, 0x00]
            return bytes
        }
        let length: UInt16 = isIPv4 ? 12 : 36
        bytes += [0x21, isIPv4 ? 0x11 : 0x21, UInt8(length >> 8), UInt8(length & 0xFF)]
        bytes += source.address.bytes
        bytes += destination.address.bytes
        bytes += [UInt8(source.port >> 8), UInt8(source.port & 0xFF)]
        bytes += [UInt8(destination.port >> 8), UInt8(destination.port & 0xFF)]
        return bytes
    }
}
