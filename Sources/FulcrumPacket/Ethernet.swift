/// Ethernet II framing (no VLAN tags: the packet plane binds to untagged interfaces).
public enum Ethernet {
    public static let headerLength = 14
    public static let destinationOffset = 0
    public static let sourceOffset = 6
    public static let etherTypeOffset = 12

    public static let typeIPv4: UInt16 = 0x0800
    public static let typeARP: UInt16 = 0x0806

    /// The EtherType of a frame, or `.truncated` when shorter than an Ethernet header.
    public static func etherType(_ p: PacketBytes, length: Int) throws(DropReason) -> UInt16 {
        guard length >= headerLength, length <= p.count else { throw .truncated }
        return p.u16(etherTypeOffset)
    }

    /// Writes an Ethernet header at `offset` (the caller checked that 14 bytes fit).
    public static func write(
        into p: PacketBytes, at offset: Int = 0, destination: MACAddress, source: MACAddress, etherType: UInt16
    ) {
        p.setMAC(offset + destinationOffset, destination)
        p.setMAC(offset + sourceOffset, source)
        p.setU16(offset + etherTypeOffset, etherType)
    }
}

/// ARP for IPv4 over Ethernet (RFC 826): what DSR needs to answer for the VIP and announce it.
public enum ARP {
    /// Ethernet header + 28-byte ARP payload.
    public static let frameLength = Ethernet.headerLength + 28
    public static let opRequest: UInt16 = 1
    public static let opReply: UInt16 = 2

    /// An ARP packet's fields (Ethernet/IPv4 only).
    public struct Message: Equatable, Sendable {
        public var operation: UInt16
        public var senderMAC: MACAddress
        public var senderIP: UInt32
        public var targetMAC: MACAddress
        public var targetIP: UInt32
    }

    /// Parses the ARP payload of a frame whose EtherType is ARP.
    public static func parse(_ p: PacketBytes, length: Int) throws(DropReason) -> Message {
        guard length >= frameLength, length <= p.count else { throw .truncated }
        let b = Ethernet.headerLength
        // Hardware Ethernet (1), protocol IPv4, address lengths 6 and 4.
        guard p.u16(b) == 1, p.u16(b + 2) == Ethernet.typeIPv4, p.u8(b + 4) == 6, p.u8(b + 5) == 4 else {
            throw .arpIgnored
        }
        return Message(
            operation: p.u16(b + 6), senderMAC: p.mac(b + 8), senderIP: p.u32(b + 14), targetMAC: p.mac(b + 18),
            targetIP: p.u32(b + 24))
    }

    /// Writes a complete ARP frame (42 bytes) at the start of `p`; returns its length.
    @discardableResult
    public static func write(into p: PacketBytes, ethernetDestination: MACAddress, message m: Message) -> Int {
        precondition(p.count >= frameLength, "ARP frame needs 42 bytes")
        Ethernet.write(into: p, destination: ethernetDestination, source: m.senderMAC, etherType: Ethernet.typeARP)
        let b = Ethernet.headerLength
        p.setU16(b, 1)
        p.setU16(b + 2, Ethernet.typeIPv4)
        p.setU8(b + 4, 6)
        p.setU8(b + 5, 4)
        p.setU16(b + 6, m.operation)
        p.setMAC(b + 8, m.senderMAC)
        p.setU32(b + 14, m.senderIP)
        p.setMAC(b + 18, m.targetMAC)
        p.setU32(b + 24, m.targetIP)
        return frameLength
    }

    /// The reply to `request` saying `ip` is at `mac`, or nil when the request is not a request for `ip`.
    public static func reply(to request: Message, ip: UInt32, mac: MACAddress) -> Message? {
        guard request.operation == opRequest, request.targetIP == ip else { return nil }
        return Message(
            operation: opReply, senderMAC: mac, senderIP: ip, targetMAC: request.senderMAC,
            targetIP: request.senderIP)
    }

    /// A gratuitous ARP frame announcing `ip` at `mac` (a broadcast request with sender = target = `ip`,
    /// which every Linux neighbour table accepts), sent when Fulcrum starts serving a VIP.
    public static func gratuitous(ip: UInt32, mac: MACAddress) -> [UInt8] {
        var frame = [UInt8](repeating: 0, count: frameLength)
        _ = frame.withUnsafeMutableBytes { raw in
            write(
                into: PacketBytes(raw), ethernetDestination: .broadcast,
                message: Message(operation: opRequest, senderMAC: mac, senderIP: ip, targetMAC: .zero, targetIP: ip))
        }
        return frame
    }
}
