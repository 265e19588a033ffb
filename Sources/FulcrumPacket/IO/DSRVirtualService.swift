import CFulcrumLinux
import FulcrumCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A running `dsr` virtual service: one worker on an AF_PACKET socket (with the virtio_net_hdr) doing poll →
/// `recvmmsg` batch → MAC rewrite in place (`DSRForwarder`) → `sendmmsg`, reading the pool snapshot once per
/// batch. It answers ARP for the VIP, announces it with a gratuitous ARP at start, and learns the backends'
/// MACs from ARP (asking with probes for backends it has not heard from).
///
/// In an HA pair only the VRRP master may own the VIP: `answersARP` (read once per batch) switches the worker
/// between owning it (answers ARP, forwards, and announces it with gratuitous ARPs each time it turns on) and
/// silent standby (neither answers ARP for the VIP nor forwards frames sent to it).
///
/// The host must not own the VIP and must not forward (`ip_forward=0`), or the kernel would answer or route
/// the frames it also receives. Backends: VIP on `lo`, `arp_ignore=1`, `arp_announce=2`, service on the VIP
/// at the same port.
public final class DSRVirtualService: Sendable {
    public struct Statistics: Sendable, Equatable {
        public var forwarding = ForwardingCounters()
        public var drops = DropCounters()
        public var flows = FlowCounters()
        public var activeFlows = 0
        public var neighbors = 0
        public var sendFailures: UInt64 = 0
        /// Frames waiting for a backend's MAC now; sent once it was learned; dropped (queue full, no answer
        /// within 1 s). Each was also counted once as a `noNeighbor` drop when it arrived.
        public var queuedForNeighbor = 0
        public var releasedAfterARP: UInt64 = 0
        public var neighborQueueDrops: UInt64 = 0
    }

    public let service: VirtualServiceAddress
    public let pool: Pool
    public let socket: PacketSocket
    private let flowCapacity: Int
    private let timeouts: FlowTimeouts
    private let loop = PacketWorkerLoop()
    private let owning: Atomic<Bool>
    private let published = Mutex(Statistics())
    /// HA mirroring: change feed, snapshots, mirrored flows to install.
    public let mirror = FlowMirrorPort()

    public init(
        service: VirtualServiceAddress, pool: Pool, interface: String, networkNamespace: String? = nil,
        flowCapacity: Int = 65536, timeouts: FlowTimeouts = FlowTimeouts(), answersARP: Bool = true
    ) throws(PacketIOError) {
        self.service = service
        owning = Atomic(answersARP)
        self.pool = pool
        self.flowCapacity = flowCapacity
        self.timeouts = timeouts
        if let networkNamespace {
            socket = try NetworkNamespace.perform(path: networkNamespace) { () throws(PacketIOError) in
                try PacketSocket(interface: interface)
            }
        } else {
            socket = try PacketSocket(interface: interface)
        }
    }

    public var statistics: Statistics { published.withLock { $0 } }

    /// Whether this node owns the VIP (true without HA; the VRRP master in a pair). The worker reads it once per
    /// batch, so a change takes effect within one poll interval (100 ms).
    public var answersARP: Bool {
        get { owning.load(ordering: .acquiring) }
        set { owning.store(newValue, ordering: .releasing) }
    }

    public func start() throws(PacketIOError) {
        try loop.start { [self] in run() }
    }

    public func stop() {
        loop.stop()
    }

    private func run() {
        let forwarder = DSRForwarder(
            settings: FrameServiceSettings(
                service: service, localMAC: socket.mac, flowCapacity: flowCapacity, timeouts: timeouts))
        var neighbors = NeighborTable()
        let changeLog = FlowChangeLog()
        forwarder.pinning.recordChanges(into: changeLog)
        var reader = PoolReader(pool)
        let batch = MessageBatch(count: 64, slotSize: VirtioNetHeader.length + 65536)
        var sendFailures: UInt64 = 0
        var pending = NeighborQueue()
        var releasedAfterARP: UInt64 = 0
        var lastProbe: UInt64 = 0
        var ownership = VIPOwnership()
        var pfd = pollfd(fd: socket.fd, events: Int16(POLLIN), revents: 0)
        while !loop.isStopping {
            pfd.revents = 0
            let ready = poll(&pfd, 1, 100)
            let now = MonotonicClock.now()
            let owner = owning.load(ordering: .acquiring)
            for _ in 0..<ownership.announcements(owner: owner) {
                socket.sendPlain(ARP.gratuitous(ip: service.vip, mac: socket.mac))
            }
            let snapshot = reader.snapshot()
            // Ask for the backends we cannot reach yet, at most every 500 ms.
            if now &- lastProbe >= 500_000_000 {
                lastProbe = now
                for candidate in snapshot.candidates {
                    if let address = candidate.backend.ipv4, neighbors.lookup(address) == nil {
                        socket.sendPlain(ARP.request(target: address, senderMAC: socket.mac))
                    }
                }
            }
            if ready > 0 {
                let received = batch.receive(socket.fd)
                // Frames for another host's MAC (promiscuous interface) are not ours to forward.
                for i in 0..<received where !batch.isOutgoing(i) && !batch.isOtherHost(i) {
                    let length = batch.length(i)
                    guard length > VirtioNetHeader.length else { continue }
                    let bytes = batch.slot(i)
                    let frameLength = length - VirtioNetHeader.length
                    neighbors.learn(fromFrame: bytes, frameStart: VirtioNetHeader.length, length: frameLength)
                    // A standby stays silent: no ARP replies for the VIP, no forwarding (it still learns MACs).
                    guard owner else { continue }
                    let verdict = forwarder.process(
                        bytes, frameStart: VirtioNetHeader.length, length: frameLength, snapshot: snapshot, now: now
                    ) { neighbors.lookup($0) }
                    switch verdict {
                    case .forward(let range):
                        // The virtio_net_hdr goes back unchanged: the kernel finishes checksums and segments.
                        batch.queueSend(slot: i, range: 0..<range.upperBound)
                    case .reply(let range):
                        for k in 0..<VirtioNetHeader.length { bytes.setU8(k, 0) }
                        batch.queueSend(slot: i, range: 0..<range.upperBound)
                    case .drop(.noNeighbor):
                        // Keep it (with its virtio_net_hdr) until the backend answers ARP; ask at the first one.
                        let address = forwarder.unresolvedBackend
                        let copy = Array(UnsafeRawBufferPointer(rebasing: bytes.raw[0..<length]))
                        if pending.enqueue(copy, for: address, now: now) {
                            socket.sendPlain(ARP.request(target: address, senderMAC: socket.mac))
                        }
                    case .emitted, .drop:
                        break
                    }
                }
                sendFailures &+= UInt64(batch.flushSends(socket.fd))
            }
            if pending.count > 0 {
                for address in pending.addresses {
                    guard let mac = neighbors.lookup(address) else { continue }
                    for var frame in pending.release(address) {
                        frame.withUnsafeMutableBytes { raw in
                            let p = PacketBytes(raw)
                            p.setMAC(VirtioNetHeader.length + Ethernet.destinationOffset, mac)
                            p.setMAC(VirtioNetHeader.length + Ethernet.sourceOffset, socket.mac)
                        }
                        if frame.withUnsafeBytes({ send(socket.fd, $0.baseAddress, $0.count, 0) }) == frame.count {
                            releasedAfterARP &+= 1
                        } else {
                            sendFailures &+= 1
                        }
                    }
                }
                pending.expire(now: now)
            }
            forwarder.pinning.flows.sweep(now: now, limit: 256)
            mirror.serve(forwarder.pinning, log: changeLog, snapshot: { reader.snapshot() }, now: now)
            let stats = Statistics(
                forwarding: forwarder.counters, drops: forwarder.drops, flows: forwarder.pinning.flows.counters,
                activeFlows: forwarder.pinning.flows.count, neighbors: neighbors.count, sendFailures: sendFailures,
                queuedForNeighbor: pending.count, releasedAfterARP: releasedAfterARP,
                neighborQueueDrops: pending.dropped)
            published.withLock { $0 = stats }
        }
    }
}

/// A packet-plane service that answers ARP for its VIP itself (`dsr`, `tunnel`). In an HA pair only the VRRP
/// master may: the server switches `answersARP` on each transition.
public protocol VIPOwningService: AnyObject, Sendable {
    /// Whether this node owns the VIP: answers ARP for it, announces it, forwards frames sent to it.
    var answersARP: Bool { get set }
}

extension DSRVirtualService: VIPOwningService {}

/// When a DSR or tunnel worker announces its VIP: on each change from not owning to owning it (the first batch counts
/// as a change when it starts owning), a few gratuitous ARPs, as VRRP sends on becoming master, so switches and
/// clients that missed one still learn the new owner's MAC.
public struct VIPOwnership: Sendable {
    /// Gratuitous ARPs sent per takeover.
    public static let repeatCount = 3
    private var owned = false

    public init() {}

    /// How many gratuitous ARPs to send now, given whether the node owns the VIP this batch.
    public mutating func announcements(owner: Bool) -> Int {
        defer { owned = owner }
        return owner && !owned ? Self.repeatCount : 0
    }
}
