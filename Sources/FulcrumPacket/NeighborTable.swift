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

/// Frames waiting for a backend's MAC (DSR): instead of dropping the first packets of a flow to a backend not
/// yet in the `NeighborTable` (a SYN lost costs the client a 1 s retransmit), the worker keeps copies here, asks
/// with ARP, and sends them once the answer is learned. Bounded in frames per address, in total, and in age;
/// what does not fit or ages out is dropped and counted. One worker owns it.
public struct NeighborQueue: Sendable {
    public let perAddress: Int
    public let total: Int
    /// Frames older than this are dropped (nanoseconds).
    public let maximumAge: UInt64
    private var waiting: [UInt32: [(frame: [UInt8], queuedAt: UInt64)]] = [:]
    public private(set) var count = 0
    /// Frames dropped because the queue was full or they aged out.
    public private(set) var dropped: UInt64 = 0

    public init(perAddress: Int = 32, total: Int = 256, maximumAge: UInt64 = 1_000_000_000) {
        self.perAddress = perAddress
        self.total = total
        self.maximumAge = maximumAge
    }

    /// Keeps a copy of `frame` for `address`. Returns true when this is the first frame waiting for it (the
    /// caller asks for the address then), false otherwise; a frame that does not fit is dropped and counted.
    @discardableResult
    public mutating func enqueue(_ frame: [UInt8], for address: UInt32, now: UInt64) -> Bool {
        let first = waiting[address]?.isEmpty ?? true
        guard count < total, waiting[address, default: []].count < perAddress else {
            dropped &+= 1
            return false
        }
        waiting[address, default: []].append((frame, now))
        count += 1
        return first
    }

    /// The addresses that have frames waiting.
    public var addresses: [UInt32] { Array(waiting.keys) }

    /// Takes the frames waiting for `address` (oldest first).
    public mutating func release(_ address: UInt32) -> [[UInt8]] {
        guard let frames = waiting.removeValue(forKey: address) else { return [] }
        count -= frames.count
        return frames.map(\.frame)
    }

    /// Drops frames older than `maximumAge` (their backend did not answer ARP in time).
    public mutating func expire(now: UInt64) {
        for (address, frames) in waiting {
            let kept = frames.filter { now < $0.queuedAt || now - $0.queuedAt < maximumAge }
            guard kept.count != frames.count else { continue }
            dropped &+= UInt64(frames.count - kept.count)
            count -= frames.count - kept.count
            waiting[address] = kept.isEmpty ? nil : kept
        }
    }
}
