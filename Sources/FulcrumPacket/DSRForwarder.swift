import FulcrumCore

/// Settings shared by the modes that receive Ethernet frames for the VIP (DSR and tunnel).
public struct FrameServiceSettings: Sendable, Equatable {
    public var service: VirtualServiceAddress
    /// The MAC of the interface Fulcrum receives and sends on: ARP replies say the VIP is here.
    public var localMAC: MACAddress
    public var flowCapacity: Int
    public var timeouts: FlowTimeouts

    public init(
        service: VirtualServiceAddress, localMAC: MACAddress, flowCapacity: Int = 65536,
        timeouts: FlowTimeouts = FlowTimeouts()
    ) {
        self.service = service
        self.localMAC = localMAC
        self.flowCapacity = flowCapacity
        self.timeouts = timeouts
    }
}

/// The first step for a received Ethernet frame: an ARP request for the VIP is answered in place,
/// an IPv4 packet for the service is parsed, anything else is a counted drop.
enum FrameClassifier {
    enum Outcome {
        case arpReply(Range<Int>)
        case packet(IPv4Info, TransportInfo, FlowKey)
    }

    static func classify(
        _ p: PacketBytes, frameStart: Int, length: Int, settings: FrameServiceSettings, allowSuperFrame: Bool
    ) throws(DropReason) -> Outcome {
        guard frameStart >= 0, length >= 0, frameStart + length <= p.count else { throw .truncated }
        let frame = PacketBytes(UnsafeMutableRawBufferPointer(rebasing: p.raw[frameStart..<(frameStart + length)]))
        switch try Ethernet.etherType(frame, length: length) {
        case Ethernet.typeARP:
            let request = try ARP.parse(frame, length: length)
            guard let reply = ARP.reply(to: request, ip: settings.service.vip, mac: settings.localMAC) else {
                throw .arpIgnored
            }
            // The request is at least 42 bytes long, so the reply fits where it was.
            let n = ARP.write(into: frame, ethernetDestination: request.senderMAC, message: reply)
            return .arpReply(frameStart..<(frameStart + n))
        case Ethernet.typeIPv4:
            let ip = try IPv4Header.parse(
                p, at: frameStart + Ethernet.headerLength, limit: frameStart + length,
                allowTotalLengthZero: allowSuperFrame)
            let transport = try TransportHeader.parse(p, ip: ip)
            let key = TransportHeader.flowKey(ip: ip, transport: transport)
            guard settings.service.matches(key) else { throw .notForVIP }
            return .packet(ip, transport, key)
        default:
            throw .unsupportedEtherType
        }
    }
}

/// L2 direct server return: frames for the VIP get the backend's MAC as destination and ours as source,
/// and go back out of the same interface; the backend (VIP on its loopback) answers the client directly.
/// Checksums and the virtio_net_hdr (GSO) are untouched: the frame is resent as it came.
public final class DSRForwarder {
    public let settings: FrameServiceSettings
    public let pinning: BackendFlows
    public private(set) var drops = DropCounters()
    public private(set) var counters = ForwardingCounters()
    /// The backend address of the last frame dropped with `noNeighbor` (the worker queues the frame for it).
    public private(set) var unresolvedBackend: UInt32 = 0

    public init(settings: FrameServiceSettings) {
        self.settings = settings
        pinning = BackendFlows(capacity: settings.flowCapacity, timeouts: settings.timeouts)
    }

    /// Processes the frame at `frameStart..<frameStart+length` in place. `neighbor` maps a backend's IPv4
    /// address to its MAC (the interface's neighbour table).
    public func process(
        _ p: PacketBytes, frameStart: Int, length: Int, snapshot: PoolSnapshot, now: UInt64,
        neighbor: (UInt32) -> MACAddress?
    ) -> PacketVerdict {
        do throws(DropReason) {
            switch try FrameClassifier.classify(
                p, frameStart: frameStart, length: length, settings: settings, allowSuperFrame: true)
            {
            case .arpReply(let range):
                counters.arpReplies &+= 1
                return .reply(range)
            case .packet(let ip, let transport, let key):
                let backend = try pinning.backend(
                    for: key, tcpFlags: transport.tcpFlags, snapshot: snapshot, now: now)
                guard let address = backend.ipv4 else { throw .backendNotIPv4 }
                guard let mac = neighbor(address) else {
                    unresolvedBackend = address
                    throw .noNeighbor
                }
                p.setMAC(frameStart + Ethernet.destinationOffset, mac)
                p.setMAC(frameStart + Ethernet.sourceOffset, settings.localMAC)
                counters.packetsIn &+= 1
                counters.bytesIn &+= UInt64(ip.totalLength)
                return .forward(frameStart..<(frameStart + length))
            }
        } catch {
            drops.record(error)
            return .drop(error)
        }
    }
}
