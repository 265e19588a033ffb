import FulcrumCore

/// Settings of a `nat` virtual service.
public struct NATSettings: Sendable, Equatable {
    public var service: VirtualServiceAddress
    /// Connections to backends leave from this address…
    public var snatAddress: UInt32
    /// …with a source port from this range.
    public var snatPorts: ClosedRange<UInt16>
    /// Hard bound on tracked flows per worker.
    public var flowCapacity: Int
    public var timeouts: FlowTimeouts

    public init(
        service: VirtualServiceAddress, snatAddress: UInt32, snatPorts: ClosedRange<UInt16> = 20000...60000,
        flowCapacity: Int = 65536, timeouts: FlowTimeouts = FlowTimeouts()
    ) {
        self.service = service
        self.snatAddress = snatAddress
        self.snatPorts = snatPorts
        self.flowCapacity = flowCapacity
        self.timeouts = timeouts
    }
}

/// Full NAT on IPv4 packets (what arrives on a TUN device): client → VIP:port becomes SNAT:port' → backend,
/// and the backend's replies to SNAT:port' become VIP:port → client. Checksums are updated incrementally.
///
/// One per packet worker (not thread-safe). The backend of a new flow comes from the pool snapshot the worker
/// read for the current batch; the flow keeps it until it ends.
public final class NATRewriter {
    /// What the table remembers about a NATed connection.
    public struct Mapping {
        public let backend: Backend
        public let backendAddress: UInt32
        public let backendPort: UInt16
        public let client: UInt32
        public let clientPort: UInt16
        public let snatPort: UInt16
    }

    public let settings: NATSettings
    public let flows: FlowTable<Mapping>
    public private(set) var ports: PortPool
    public private(set) var drops = DropCounters()
    public private(set) var counters = ForwardingCounters()
    /// Where inserted and removed flows are recorded for HA mirroring (`FlowMirroring.swift`).
    var changeLog: FlowChangeLog?

    /// Takes a given SNAT port for a mirrored flow.
    func claimPort(_ port: UInt16) -> Bool { ports.claim(port) }

    public init(settings: NATSettings) {
        self.settings = settings
        flows = FlowTable(capacity: settings.flowCapacity, timeouts: settings.timeouts)
        ports = PortPool(settings.snatPorts)
        flows.onRemove = { [unowned self] mapping in
            self.ports.release(mapping.snatPort)
            mapping.backend.connectionClosed()
        }
    }

    /// Rewrites the IPv4 packet at `start..<start+length` of `p` in place.
    public func process(_ p: PacketBytes, start: Int, length: Int, snapshot: PoolSnapshot, now: UInt64) -> PacketVerdict
    {
        do throws(DropReason) {
            let range = try rewrite(p, start: start, length: length, snapshot: snapshot, now: now)
            return .forward(range)
        } catch {
            drops.record(error)
            return .drop(error)
        }
    }

    private func rewrite(
        _ p: PacketBytes, start: Int, length: Int, snapshot: PoolSnapshot, now: UInt64
    ) throws(DropReason) -> Range<Int> {
        guard start >= 0, length >= 0, start + length <= p.count else { throw .truncated }
        let ip = try IPv4Header.parse(p, at: start, limit: start + length)
        let transport = try TransportHeader.parse(p, ip: ip)
        let key = TransportHeader.flowKey(ip: ip, transport: transport)
        let isTCP = ip.proto == IPProtocolNumber.tcp
        let service = settings.service

        if key.destination == settings.snatAddress && key.proto == service.proto {
            // A backend's reply.
            guard let (slot, isReverse) = flows.lookup(key, now: now), isReverse else { throw .noFlow }
            let m = flows.value(slot)
            flows.touch(slot, tcpFlags: transport.tcpFlags, isTCP: isTCP, now: now)
            TransportHeader.rewrite(
                p, ip: ip, transport: transport, source: service.vip, destination: m.client,
                sourcePort: service.port, destinationPort: m.clientPort)
            counters.packetsOut &+= 1
            counters.bytesOut &+= UInt64(ip.totalLength)
            return ip.offset..<ip.end
        }
        guard service.matches(key) else { throw .notForVIP }

        let isNewConnection = isTCP && transport.tcpFlags & (TCPFlags.syn | TCPFlags.ack) == TCPFlags.syn
        var found = flows.lookup(key, now: now)
        if let (slot, isReverse) = found {
            // A client that reuses the tuple of a finished connection starts a new one (and may get another backend).
            if isReverse || (isNewConnection && flows.state(slot) != .synSent && flows.state(slot) != .established) {
                flows.remove(slot)
                found = nil
            }
        }
        let slot: FlowTable<Mapping>.Slot
        if let (existing, _) = found {
            slot = existing
        } else {
            // TCP without a flow is only accepted on a SYN: the backend would answer anything else with a RST.
            if isTCP && !isNewConnection { throw .noFlow }
            guard let backend = snapshot.pick(flow: key, now: now) else { throw .noBackend }
            guard let backendAddress = backend.ipv4 else { throw .backendNotIPv4 }
            // Flows that ended but were not looked up since still hold ports: reclaim some before giving up.
            if ports.available == 0 { flows.sweep(now: now, limit: 256) }
            guard let snatPort = ports.allocate() else { throw .portsExhausted }
            let mapping = Mapping(
                backend: backend, backendAddress: backendAddress, backendPort: backend.endpoint.port,
                client: key.source, clientPort: key.sourcePort, snatPort: snatPort)
            let reverse = FlowKey(
                source: backendAddress, destination: settings.snatAddress, sourcePort: mapping.backendPort,
                destinationPort: snatPort, proto: key.proto)
            backend.connectionOpened()
            slot = flows.insert(
                key, reverseKey: reverse, value: mapping, state: isTCP ? .synSent : .datagram, now: now)
        }
        let m = flows.value(slot)
        flows.touch(slot, tcpFlags: transport.tcpFlags, isTCP: isTCP, now: now)
        TransportHeader.rewrite(
            p, ip: ip, transport: transport, source: settings.snatAddress, destination: m.backendAddress,
            sourcePort: m.snatPort, destinationPort: m.backendPort)
        counters.packetsIn &+= 1
        counters.bytesIn &+= UInt64(ip.totalLength)
        return ip.offset..<ip.end
    }
}
