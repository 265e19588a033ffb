import CFulcrumLinux
import FulcrumCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A running `tunnel` virtual service (IPIP or VXLAN): one worker on an AF_PACKET socket (virtio_net_hdr)
/// doing poll → `recvmmsg` batch → finish checksums / split GSO → encapsulate in place (`TunnelForwarder`) →
/// send the outer packets through a raw IPv4 socket, batched with `sendmmsg` (the kernel routes them to the
/// backend). It answers ARP
/// for the VIP and announces it at start, like DSR, so clients on the segment send it the VIP's traffic.
///
/// Backends decapsulate (VXLAN device or the ipip module, or `IPIPDecapsulator` where the module is missing)
/// and answer the client directly. Outer packets above the MTU are refused by the kernel and counted
/// (`exceedsMTU`, `sendFailures`): clamp the MSS on the backends (see docs/architecture.md).
public final class TunnelVirtualService: Sendable {
    public struct Statistics: Sendable, Equatable {
        public var forwarding = ForwardingCounters()
        public var drops = DropCounters()
        public var flows = FlowCounters()
        public var activeFlows = 0
        public var sendFailures: UInt64 = 0
    }

    public let settings: TunnelSettings
    public let pool: Pool
    public let socket: PacketSocket
    public let output: RawIPSocket
    private let stopping = Atomic<Bool>(false)
    private let published = Mutex(Statistics())
    private let worker = Mutex<WorkerThread?>(nil)
    /// HA mirroring: change feed, snapshots, mirrored flows to install.
    public let mirror = FlowMirrorPort()

    /// `settings.frame.localMAC` is replaced by the interface's MAC.
    public init(
        settings: TunnelSettings, pool: Pool, interface: String, networkNamespace: String? = nil
    ) throws(PacketIOError) {
        self.pool = pool
        let open = { @Sendable () throws(PacketIOError) -> (PacketSocket, RawIPSocket) in
            (try PacketSocket(interface: interface), try RawIPSocket())
        }
        if let networkNamespace {
            (socket, output) = try NetworkNamespace.perform(path: networkNamespace, open)
        } else {
            (socket, output) = try open()
        }
        var s = settings
        s.frame.localMAC = socket.mac
        self.settings = s
    }

    public var statistics: Statistics { published.withLock { $0 } }

    public func start() throws(PacketIOError) {
        let thread = try WorkerThread { [self] in run() }
        worker.withLock { $0 = thread }
    }

    public func stop() {
        stopping.store(true, ordering: .releasing)
        let thread = worker.withLock { w -> WorkerThread? in
            defer { w = nil }
            return w
        }
        thread?.join()
    }

    private func run() {
        let forwarder = TunnelForwarder(settings: settings)
        let changeLog = FlowChangeLog()
        forwarder.pinning.recordChanges(into: changeLog)
        var reader = PoolReader(pool)
        // Headroom for the outer headers in front of the received frame (beyond its Ethernet header).
        let headroom = 64
        let batch = MessageBatch(count: 64, slotSize: headroom + VirtioNetHeader.length + 65536, headroom: headroom)
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 128 + 65536, alignment: 64)
        defer { scratch.deallocate() }
        let outgoing = RawSendBatch()
        var sendFailures: UInt64 = 0
        socket.sendPlain(ARP.gratuitous(ip: settings.frame.service.vip, mac: socket.mac))
        var pfd = pollfd(fd: socket.fd, events: Int16(POLLIN), revents: 0)
        while !stopping.load(ordering: .acquiring) {
            pfd.revents = 0
            let ready = poll(&pfd, 1, 100)
            let now = MonotonicClock.now()
            if ready > 0 {
                let snapshot = reader.snapshot()
                let received = batch.receive(socket.fd)
                for i in 0..<received where !batch.isOutgoing(i) {
                    let length = batch.length(i)
                    guard length > VirtioNetHeader.length else { continue }
                    let bytes = batch.slot(i)
                    guard let offload = try? VirtioNetHeader(bytes, at: headroom) else { continue }
                    let frameStart = headroom + VirtioNetHeader.length
                    let verdict = forwarder.process(
                        bytes, frameStart: frameStart, length: length - VirtioNetHeader.length, offload: offload,
                        snapshot: snapshot, now: now, scratch: PacketBytes(scratch)
                    ) { buffer, range in
                        let packet = UnsafeRawBufferPointer(rebasing: buffer.raw[range])
                        let destination = buffer.u32(range.lowerBound + IPv4Header.destinationOffset)
                        sendFailures &+= UInt64(outgoing.queue(packet, to: destination, on: output))
                    }
                    if case .reply(let range) = verdict {
                        for k in headroom..<frameStart { bytes.setU8(k, 0) }
                        batch.queueSend(slot: i, range: headroom..<range.upperBound)
                    }
                }
                sendFailures &+= UInt64(outgoing.flush(output))
                sendFailures &+= UInt64(batch.flushSends(socket.fd))
            }
            forwarder.pinning.flows.sweep(now: now, limit: 256)
            mirror.serve(forwarder.pinning, log: changeLog, snapshot: { reader.snapshot() }, now: now)
            let stats = Statistics(
                forwarding: forwarder.counters, drops: forwarder.drops, flows: forwarder.pinning.flows.counters,
                activeFlows: forwarder.pinning.flows.count, sendFailures: sendFailures)
            published.withLock { $0 = stats }
        }
    }
}
