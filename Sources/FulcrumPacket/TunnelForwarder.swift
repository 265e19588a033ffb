import FulcrumCore

/// Settings of a `tunnel` virtual service.
public struct TunnelSettings: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case ipip
        case vxlan(Encapsulation.VXLAN)
    }

    public var frame: FrameServiceSettings
    public var kind: Kind
    /// Outer source address (the balancer's address on the underlay).
    public var localAddress: UInt32
    /// Underlay MTU: larger outer packets are counted in `exceedsMTU` (they leave fragmented).
    public var mtu: Int

    public init(frame: FrameServiceSettings, kind: Kind, localAddress: UInt32, mtu: Int = 1500) {
        self.frame = frame
        self.kind = kind
        self.localAddress = localAddress
        self.mtu = mtu
    }

    public var overhead: Int {
        switch kind {
        case .ipip: return Encapsulation.ipipOverhead
        case .vxlan: return Encapsulation.vxlanOverhead
        }
    }
}

/// Tunnel mode: frames for the VIP (from AF_PACKET with the virtio_net_hdr) are made plain — partial
/// checksums finished, GSO super-frames split — and each IPv4 packet is encapsulated to the backend's
/// address (IPIP or VXLAN). Outer packets are handed to `emit` as complete IPv4 packets (for a raw socket
/// with IP_HDRINCL). The backend decapsulates and answers the client directly.
public final class TunnelForwarder {
    public let settings: TunnelSettings
    public let pinning: BackendFlows
    public private(set) var drops = DropCounters()
    public private(set) var counters = ForwardingCounters()
    private var identification: UInt16 = 0

    public init(settings: TunnelSettings) {
        self.settings = settings
        pinning = BackendFlows(capacity: settings.frame.flowCapacity, timeouts: settings.frame.timeouts)
    }

    /// Processes the frame at `frameStart..<frameStart+length` of `p` (which must leave `settings.overhead`
    /// bytes of headroom before the frame's IP header, beyond its Ethernet header, for the in-place path).
    /// `scratch` receives GSO segments (one at a time). `emit(buffer, range)` sends one outer packet.
    public func process(
        _ p: PacketBytes, frameStart: Int, length: Int, offload: VirtioNetHeader?, snapshot: PoolSnapshot,
        now: UInt64, scratch: PacketBytes, emit: (PacketBytes, Range<Int>) -> Void
    ) -> PacketVerdict {
        do throws(DropReason) {
            let isGSO = offload?.isGSO ?? false
            switch try FrameClassifier.classify(
                p, frameStart: frameStart, length: length, settings: settings.frame, allowSuperFrame: isGSO)
            {
            case .arpReply(let range):
                counters.arpReplies &+= 1
                return .reply(range)
            case .packet(let ip, let transport, let key):
                let backend = try pinning.backend(
                    for: key, tcpFlags: transport.tcpFlags, snapshot: snapshot, now: now)
                guard let destination = backend.ipv4 else { throw .backendNotIPv4 }
                let flowHash = key.stableHash
                if let h = offload, isGSO {
                    guard h.gsoType & ~VirtioNetHeader.gsoECN == VirtioNetHeader.gsoTCPv4 else {
                        throw .unsupportedGSO
                    }
                    var failure: DropReason?
                    let n = try Offload.segmentTCPv4(
                        p, ip: ip, tcp: transport, mss: Int(h.gsoSize), scratch: scratch,
                        headroom: settings.overhead
                    ) { segment in
                        do throws(DropReason) {
                            let range = try encapsulate(scratch, segment, destination: destination, flowHash: flowHash)
                            emit(scratch, range)
                        } catch {
                            failure = error
                        }
                    }
                    if let failure { throw failure }
                    counters.gsoFrames &+= 1
                    counters.gsoSegments &+= UInt64(n)
                    counters.packetsIn &+= 1
                    counters.bytesIn &+= UInt64(ip.totalLength)
                    return .emitted(segments: n)
                }
                if let h = offload, h.flags & VirtioNetHeader.needsChecksum != 0 {
                    try Offload.finishPartialChecksum(p, frameStart: frameStart, end: ip.end, header: h)
                }
                let range = try encapsulate(p, ip, destination: destination, flowHash: flowHash)
                emit(p, range)
                counters.packetsIn &+= 1
                counters.bytesIn &+= UInt64(ip.totalLength)
                return .emitted(segments: 1)
            }
        } catch {
            drops.record(error)
            return .drop(error)
        }
    }

    private func encapsulate(
        _ p: PacketBytes, _ inner: IPv4Info, destination: UInt32, flowHash: UInt64
    ) throws(DropReason) -> Range<Int> {
        identification &+= 1
        let range: Range<Int>
        switch settings.kind {
        case .ipip:
            range = try Encapsulation.ipip(
                p, inner: inner, source: settings.localAddress, destination: destination,
                identification: identification)
        case .vxlan(let vxlan):
            range = try Encapsulation.vxlan(
                p, inner: inner, settings: vxlan, source: settings.localAddress, destination: destination,
                sourcePort: Encapsulation.vxlanSourcePort(flowHash: flowHash), identification: identification)
        }
        if range.count > settings.mtu { counters.exceedsMTU &+= 1 }
        return range
    }
}
