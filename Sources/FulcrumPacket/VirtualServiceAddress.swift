import FulcrumCore

/// The address packets must match to belong to a virtual service: VIP, port and protocol (IPv4).
public struct VirtualServiceAddress: Hashable, Sendable, CustomStringConvertible {
    public var vip: UInt32
    public var port: UInt16
    /// `IPProtocolNumber.tcp` or `.udp`.
    public var proto: UInt8

    public init(vip: UInt32, port: UInt16, proto: UInt8) {
        self.vip = vip
        self.port = port
        self.proto = proto
    }

    public func matches(_ key: FlowKey) -> Bool {
        key.destination == vip && key.destinationPort == port && key.proto == proto
    }

    public var description: String {
        "\(IPAddress.v4(vip)):\(port)/\(proto == IPProtocolNumber.udp ? "udp" : "tcp")"
    }
}

/// What to do with a packet after processing.
public enum PacketVerdict: Equatable, Sendable {
    /// Send the bytes `range` of the buffer (rewritten in place).
    case forward(Range<Int>)
    /// Answer on the receiving interface with the bytes `range` (an ARP reply).
    case reply(Range<Int>)
    /// The packet was split and/or encapsulated into segments already handed to the emitter.
    case emitted(segments: Int)
    case drop(DropReason)
}

/// Packets and bytes forwarded by one worker for one service.
public struct ForwardingCounters: Sendable, Equatable {
    /// Client → backend packets.
    public var packetsIn: UInt64 = 0
    public var bytesIn: UInt64 = 0
    /// Backend → client packets (NAT only: in DSR and tunnel modes replies bypass the balancer).
    public var packetsOut: UInt64 = 0
    public var bytesOut: UInt64 = 0
    /// ARP replies sent for the VIP.
    public var arpReplies: UInt64 = 0
    /// Encapsulated packets larger than the underlay MTU (they leave fragmented).
    public var exceedsMTU: UInt64 = 0
    /// GSO super-frames split in software, and the segments they became.
    public var gsoFrames: UInt64 = 0
    public var gsoSegments: UInt64 = 0
    /// GSO super-frames encapsulated whole and handed to the kernel to segment (VXLAN or IPIP through a TAP device).
    public var gsoFramesWhole: UInt64 = 0

    public init() {}
}

extension PoolSnapshot {
    /// The backend for a new flow: the pool's selector (Maglev by default for virtual services) asked with the
    /// flow's 5-tuple hash, so every balancer node sends a flow to the same backend.
    @inlinable
    public func pick(flow key: FlowKey, now: UInt64) -> Backend? {
        pick(PickKey(hash: key.stableHash, now: now))
    }
}

extension Backend {
    /// The backend's IPv4 address in host order, or nil for IPv6.
    public var ipv4: UInt32? {
        if case .v4(let a) = endpoint.address { return a }
        return nil
    }
}
