import CFulcrumLinux
import FulcrumCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A running `tunnel` virtual service (IPIP or VXLAN): one worker on an AF_PACKET socket (virtio_net_hdr)
/// doing poll → `recvmmsg` batch → encapsulate in place (`TunnelForwarder`) → hand the outer packets to the
/// kernel, which routes them to the backend. It answers ARP for the VIP and announces it at start, like DSR,
/// so clients on the segment send it the VIP's traffic.
///
/// VXLAN writes into a TAP device (`TunnelTAPDevice`, default name `fvx0`) with UDP-tunnel GSO: a client's
/// GSO super-frame leaves as one write and the kernel segments it after routing (or passes it whole through a
/// veth). IPIP has no virtio GSO type, so it writes the inner frame into a TAP (`fip0`) with a plain TCPv4 GSO
/// header and a tcx program on that TAP (`IPIPEncapsulationProgram`) adds the outer header, which makes the
/// kernel treat the super-frame as SKB_GSO_IPXIP4. Where that is impossible (VXLAN: no UDP-tunnel GSO on TAP
/// before 6.17; IPIP: the program cannot be loaded or attached — no CAP_BPF, no tcx before 6.6, a verifier
/// rejection; either: strict rp_filter) super-frames are split in software and the outer packets go through a
/// raw IPv4 socket, batched with `sendmmsg` (`fallbackReason` says why).
///
/// Backends decapsulate (VXLAN device or the ipip module, or `IPIPDecapsulator` where the module is missing)
/// and answer the client directly. Outer packets above the MTU are counted (`exceedsMTU`): through the TAP
/// they leave fragmented (DF is clear), the raw socket refuses them (`sendFailures`); clamp the MSS on the
/// backends (docs/packet-plane.md).
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
    /// The raw socket of the split path (a service without its TAP device, or a frame too big for one).
    public let output: RawIPSocket
    /// The TAP device of the whole-frame path, nil on the split path.
    public let device: TunnelTAPDevice?
    /// IPIP's encapsulation program, attached to `device`'s tcx ingress (nil for VXLAN and on the split path).
    public let encapsulationProgram: TCXIngressProgram?
    /// Why the service runs on the split path although it asked for a TAP (for the operator's log).
    public let fallbackReason: String?
    private let loop = PacketWorkerLoop()
    private let owning: Atomic<Bool>
    private let published = Mutex(Statistics())
    /// HA mirroring: change feed, snapshots, mirrored flows to install.
    public let mirror = FlowMirrorPort()

    /// `settings.frame.localMAC` is replaced by the interface's MAC and `settings.output` by the device's.
    /// The service opens TAP `deviceName` (nil: `fvx0` for VXLAN, `fip0` for IPIP) unless `wholeFrames` is false;
    /// when the kernel cannot take whole frames there (see the type's documentation) it falls back to the
    /// raw-socket path (`usesTAP` says which one runs, `fallbackReason` why).
    public init(
        settings: TunnelSettings, pool: Pool, interface: String, networkNamespace: String? = nil,
        deviceName: String? = nil, wholeFrames: Bool = true, answersARP: Bool = true
    ) throws(PacketIOError) {
        self.pool = pool
        owning = Atomic(answersARP)
        let isVXLAN: Bool
        if case .vxlan = settings.kind { isVXLAN = true } else { isVXLAN = false }
        let tapName = deviceName ?? (isVXLAN ? "fvx0" : "fip0")
        let source = settings.localAddress
        typealias Opened = (PacketSocket, RawIPSocket, TunnelTAPDevice?, TCXIngressProgram?, String?)
        let open = { @Sendable () throws(PacketIOError) -> Opened in
            var tap: TunnelTAPDevice?
            var program: TCXIngressProgram?
            var fallback: String?
            if !wholeFrames {
                fallback = "whole-frame path switched off"
            } else if TunnelTAPDevice.strictReversePathFilter() {
                fallback = "net.ipv4.conf.all.rp_filter=1 (strict) would drop what TAP \(tapName) forwards"
            } else if isVXLAN {
                do throws(PacketIOError) {
                    tap = try TunnelTAPDevice(name: tapName)
                } catch  where error.errno == EINVAL {
                    fallback = "no UDP-tunnel GSO on TAP in this kernel (\(error))"
                }
            } else {
                do throws(PacketIOError) {
                    let device = try TunnelTAPDevice(name: tapName, format: .plain)
                    let index = if_nametoindex(device.name)
                    guard index > 0 else { throw PacketIOError("if_nametoindex \(device.name)", errno: errno) }
                    program = try TCXIngressProgram(
                        instructions: IPIPEncapsulationProgram.instructions(source: source),
                        interfaceIndex: Int32(index), name: "fulcrum_ipip")
                    tap = device
                } catch {
                    // The device (if opened) closes with `device` and disappears with it.
                    fallback = "IPIP encapsulation program not attached (\(error))"
                }
            }
            return (try PacketSocket(interface: interface), try RawIPSocket(), tap, program, fallback)
        }
        if let networkNamespace {
            (socket, output, device, encapsulationProgram, fallbackReason) = try NetworkNamespace.perform(
                path: networkNamespace, open)
        } else {
            (socket, output, device, encapsulationProgram, fallbackReason) = try open()
        }
        var s = settings
        s.frame.localMAC = socket.mac
        if let device {
            s.output = isVXLAN ? .tap(mac: device.mac) : .ipipTAP(mac: device.mac)
        } else {
            s.output = .rawSocket
        }
        self.settings = s
    }

    /// Whether outer frames go through the TAP device (whole GSO super-frames) rather than the raw socket.
    public var usesTAP: Bool { device != nil }

    public var statistics: Statistics { published.withLock { $0 } }

    /// Whether this node owns the VIP (true without HA; the VRRP master in a pair): answers ARP for it,
    /// announces it, encapsulates frames sent to it. Read once per poll, so a change takes effect within 100 ms.
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
        let forwarder = TunnelForwarder(settings: settings)
        let changeLog = FlowChangeLog()
        forwarder.pinning.recordChanges(into: changeLog)
        var reader = PoolReader(pool)
        // Headroom in front of the received frame (its virtio_net_hdr and Ethernet header count towards the
        // forwarder's need: outer headers, and for the TAP its own header and Ethernet header).
        let headroom = max(64, settings.headroom - VirtioNetHeader.length - Ethernet.headerLength)
        let batch = MessageBatch(count: 64, slotSize: headroom + VirtioNetHeader.length + 65536, headroom: headroom)
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 128 + 65536, alignment: 64)
        defer { scratch.deallocate() }
        let outgoing = RawSendBatch()
        var sendFailures: UInt64 = 0
        var ownership = VIPOwnership()
        var pfd = pollfd(fd: socket.fd, events: Int16(POLLIN), revents: 0)
        while !loop.isStopping {
            pfd.revents = 0
            let ready = poll(&pfd, 1, 100)
            let now = MonotonicClock.now()
            let owner = owning.load(ordering: .acquiring)
            for _ in 0..<ownership.announcements(owner: owner) {
                socket.sendPlain(ARP.gratuitous(ip: settings.frame.service.vip, mac: socket.mac))
            }
            if ready > 0 {
                let snapshot = reader.snapshot()
                let received = batch.receive(socket.fd)
                // A standby stays silent: no ARP replies for the VIP, nothing encapsulated.
                for i in 0..<received where owner && !batch.isOutgoing(i) {
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
                        if let device {
                            // One write per frame (a TAP takes no batches); the kernel forwards it right here.
                            if !device.send(packet) { sendFailures &+= 1 }
                        } else {
                            let destination = buffer.u32(range.lowerBound + IPv4Header.destinationOffset)
                            sendFailures &+= UInt64(outgoing.queue(packet, to: destination, on: output))
                        }
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

extension TunnelVirtualService: VIPOwningService {}
