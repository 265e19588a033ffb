/// IPv4 → MAC for the backends on the local segment (DSR): learned from every ARP packet seen on the
/// interface, refreshed by asking (`ARP.request`) for backends that have no entry. Bounded; one worker owns it.
public struct NeighborTable: Sendable {
    public let capacity: Int
    private var entries: [UInt32: MACAddress] = [:]

    public init(capacity: Int = 4096) {
        self.capacity = capacity
    }

    public func lookup(_ address: UInt32) -> MACAddress? { entries[address] }

    public var count: Int { entries.count }

    /// Records the sender of an ARP message (not zero, broadcast or multicast addresses).
    public mutating func learn(_ address: UInt32, _ mac: MACAddress) {
        guard address != 0, mac != .broadcast, mac != .zero, mac.bytes.0 & 1 == 0 else { return }
        if entries[address] == nil && entries.count >= capacity { return }
        entries[address] = mac
    }

    /// Learns from the frame at `frameStart..<frameStart+length` when it is an ARP packet.
    public mutating func learn(fromFrame p: PacketBytes, frameStart: Int, length: Int) {
        guard frameStart >= 0, length >= ARP.frameLength, frameStart + length <= p.count else { return }
        let frame = PacketBytes(UnsafeMutableRawBufferPointer(rebasing: p.raw[frameStart..<(frameStart + length)]))
        guard (try? Ethernet.etherType(frame, length: length)) == Ethernet.typeARP,
            let message = try? ARP.parse(frame, length: length)
        else { return }
        learn(message.senderIP, message.senderMAC)
    }
}

extension ARP {
    /// A broadcast who-has `target` from `mac`. With `senderIP` 0 it is an ARP probe (RFC 5227), which Linux
    /// answers without adding the asker to its cache.
    public static func request(target: UInt32, senderMAC mac: MACAddress, senderIP: UInt32 = 0) -> [UInt8] {
        var frame = [UInt8](repeating: 0, count: frameLength)
        _ = frame.withUnsafeMutableBytes { raw in
            write(
                into: PacketBytes(raw), ethernetDestination: .broadcast,
                message: Message(
                    operation: opRequest, senderMAC: mac, senderIP: senderIP, targetMAC: .zero, targetIP: target))
        }
        return frame
    }
}
