import CFulcrumLinux
import FulcrumCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A running `nat` virtual service: one worker thread doing poll → read a batch from the TUN device →
/// rewrite in place (`NATRewriter`) → write back, reading the pool's current snapshot once per batch.
///
/// The kernel routes the VIP and the SNAT address into the TUN device and forwards what comes out of it
/// (`ip_forward=1`): `tunName` must be up with `ip route add <vip>/32 dev <tun>` and
/// `ip route add <snat>/32 dev <tun>`, and backends must route the SNAT address back through this host.
/// NAT state lives in one worker: replies must reach the worker that holds the flow, which a multi-queue
/// TUN (hashing each direction separately) would not guarantee.
public final class NATVirtualService: Sendable {
    /// A copy of the worker's counters, published after every batch.
    public struct Statistics: Sendable, Equatable {
        public var forwarding = ForwardingCounters()
        public var drops = DropCounters()
        public var flows = FlowCounters()
        public var activeFlows = 0
        public var batches: UInt64 = 0
    }

    public let settings: NATSettings
    public let pool: Pool
    public let device: TUNDevice
    private let loop = PacketWorkerLoop()
    private let published = Mutex(Statistics())
    private let batchSize: Int
    /// HA mirroring: change feed, snapshots, mirrored flows to install.
    public let mirror = FlowMirrorPort()

    /// Opens the TUN device (in `networkNamespace`, a path like `/var/run/netns/NAME`, when given) and, with
    /// `setUp`, sets it up; the routes into it stay the operator's (docs/packet-plane.md). With `offloads`
    /// (the default) the device carries GSO super-frames with a `VirtioNetHeader`: one header rewrite and one
    /// read/write per up to 64 KB, the kernel segmenting (or not, on to a veth) after the balancer.
    public init(
        settings: NATSettings, pool: Pool, tunName: String, networkNamespace: String? = nil, batchSize: Int = 64,
        setUp: Bool = false, offloads: Bool = true
    ) throws(PacketIOError) {
        self.settings = settings
        self.pool = pool
        self.batchSize = max(1, batchSize)
        let open = { @Sendable () throws(PacketIOError) -> TUNDevice in
            let device = try TUNDevice(name: tunName, offloads: offloads)
            if setUp { try device.setUp() }
            return device
        }
        if let networkNamespace {
            device = try NetworkNamespace.perform(path: networkNamespace, open)
        } else {
            device = try open()
        }
    }

    public var statistics: Statistics { published.withLock { $0 } }

    /// Starts the worker thread.
    public func start() throws(PacketIOError) {
        try loop.start { [self] in run() }
    }

    /// Stops the worker (within one poll interval) and waits for it.
    public func stop() {
        loop.stop()
    }

    private func run() {
        let nat = NATRewriter(settings: settings)
        let changeLog = FlowChangeLog()
        nat.recordChanges(into: changeLog)
        var reader = PoolReader(pool)
        // With offloads every packet is preceded by a virtio_net_hdr; IPv4 packets are at most 65535 bytes.
        let headerLength = device.offloads ? VirtioNetHeader.length : 0
        let capacity = headerLength + 65536 + 64
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 16)
        defer { buffer.deallocate() }
        let bytes = PacketBytes(buffer)
        var batches: UInt64 = 0
        var pfd = pollfd(fd: device.fd, events: Int16(POLLIN), revents: 0)
        while !loop.isStopping {
            pfd.revents = 0
            let ready = poll(&pfd, 1, 100)
            let now = MonotonicClock.now()
            if ready > 0 {
                let snapshot = reader.snapshot()
                for _ in 0..<batchSize {
                    let n = read(device.fd, buffer.baseAddress, capacity)
                    if n <= headerLength { break }  // EAGAIN: the batch is over; errors end it too and poll again
                    guard
                        case .forward(let range) = nat.process(
                            bytes, start: headerLength, length: n - headerLength, snapshot: snapshot, now: now),
                        range.lowerBound == headerLength
                    else { continue }
                    if headerLength > 0 {
                        // The kernel's header stays valid (same offsets, same GSO size); only a partial
                        // checksum's pseudo-header part must follow the new addresses.
                        fixPartialChecksum(bytes, packetLength: range.count)
                    }
                    // A failed write (ENOBUFS, the device going down) loses this packet, as a full NIC queue would.
                    _ = write(device.fd, buffer.baseAddress!, range.upperBound)
                }
                batches &+= 1
            }
            nat.flows.sweep(now: now, limit: 256)
            mirror.serve(nat, log: changeLog, snapshot: { reader.snapshot() }, now: now)
            let stats = Statistics(
                forwarding: nat.counters, drops: nat.drops, flows: nat.flows.counters, activeFlows: nat.flows.count,
                batches: batches)
            published.withLock { $0 = stats }
        }
    }

    /// After a rewrite: when the virtio_net_hdr at 0 says the checksum is partial, set the L4 checksum
    /// field to the pseudo-header sum of the rewritten addresses (`Offload.refreshPseudoHeaderChecksum`).
    private func fixPartialChecksum(_ bytes: PacketBytes, packetLength: Int) {
        let start = VirtioNetHeader.length
        guard let header = try? VirtioNetHeader(bytes, at: 0),
            header.flags & VirtioNetHeader.needsChecksum != 0,
            let ip = try? IPv4Header.parse(bytes, at: start, limit: start + packetLength),
            let transport = try? TransportHeader.parse(bytes, ip: ip)
        else { return }
        Offload.refreshPseudoHeaderChecksum(bytes, ip: ip, transport: transport)
    }
}
