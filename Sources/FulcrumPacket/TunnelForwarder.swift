import FulcrumCore

/// Settings of a `tunnel` virtual service.
public struct TunnelSettings: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case ipip
        case vxlan(Encapsulation.VXLAN)
    }

    /// Where the outer packets go.
    public enum Output: Sendable, Equatable {
        /// Complete outer IPv4 packets, for a raw socket with IP_HDRINCL: GSO super-frames are split first.
        case rawSocket
        /// Frames for a TAP device with UDP-tunnel GSO (`VirtioNetTunnelHeader`, then an Ethernet header to
        /// `mac`, the TAP's own address, then the outer packet): VXLAN super-frames go whole, the kernel segments.
        case tap(mac: MACAddress)
        /// IPIP frames for a TAP device whose tcx program (`IPIPEncapsulationProgram`) adds the outer header:
        /// a `VirtioNetHeader`, an Ethernet header to `mac` (the TAP's) whose source carries the backend and the
        /// outer IP id, then the inner packet. TCP/IPv4 super-frames go whole (the kernel encapsulates them as
        /// SKB_GSO_IPXIP4 and segments after routing), partial checksums stay partial.
        case ipipTAP(mac: MACAddress)
    }

    public var frame: FrameServiceSettings
    public var kind: Kind
    /// Outer source address (the balancer's address on the underlay).
    public var localAddress: UInt32
    /// Underlay MTU: larger outer packets are counted in `exceedsMTU` (they leave fragmented).
    public var mtu: Int
    public var output: Output

    public init(
        frame: FrameServiceSettings, kind: Kind, localAddress: UInt32, mtu: Int = 1500, output: Output = .rawSocket
    ) {
        self.frame = frame
        self.kind = kind
        self.localAddress = localAddress
        self.mtu = mtu
        self.output = output
    }

    /// Bytes of outer headers in front of the inner IPv4 packet.
    public var overhead: Int {
        switch kind {
        case .ipip: return Encapsulation.ipipOverhead
        case .vxlan: return Encapsulation.vxlanOverhead
        }
    }

    /// Bytes in front of the outer packet: the TAP's virtio_net_hdr and Ethernet header, or nothing.
    public var deviceHeaderLength: Int {
        switch output {
        case .rawSocket: return 0
        case .tap: return VirtioNetTunnelHeader.length + Ethernet.headerLength
        case .ipipTAP: return VirtioNetHeader.length + Ethernet.headerLength
        }
    }

    /// Bytes the forwarder writes in front of an inner IPv4 packet (the headroom `process` needs).
    public var headroom: Int { overhead + deviceHeaderLength }
}

/// Tunnel mode: frames for the VIP (from AF_PACKET with the virtio_net_hdr) are encapsulated to the backend's
/// address (IPIP or VXLAN). The backend decapsulates and answers the client directly.
///
/// With `Output.rawSocket` packets are made plain first — partial checksums finished, GSO super-frames split
/// — and `emit` gets complete outer IPv4 packets. With `Output.tap` (VXLAN) a TCP/IPv4 super-frame gets one
/// set of outer headers for all of it and a `VirtioNetTunnelHeader` telling the kernel to segment it (or to
/// pass it whole through a veth): one write per up to 64 KB instead of one packet per MSS. Other packets
/// (and super-frames too big for one outer IPv4 packet, which are split) get a header without offloads.
/// `Output.ipipTAP` (IPIP) writes no outer header at all: the TAP's tcx program adds it (see that case).
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

    /// Processes the frame at `frameStart..<frameStart+length` of `p`, which must leave `settings.headroom`
    /// bytes before the frame's IP header (its Ethernet header counts) for the in-place path. `scratch`
    /// receives split GSO segments (one at a time). `emit(buffer, range)` sends one outer packet (raw socket)
    /// or one frame for the TAP, header included.
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
                if case .ipipTAP(let mac) = settings.output {
                    let segments = try forwardToIPIPDevice(
                        p, frameStart: frameStart, ip: ip, tcp: transport, offload: offload, destination: destination,
                        deviceMAC: mac, scratch: scratch, emit: emit)
                    counters.packetsIn &+= 1
                    counters.bytesIn &+= UInt64(ip.totalLength)
                    return .emitted(segments: segments)
                }
                if let h = offload, isGSO {
                    guard h.gsoType & ~VirtioNetHeader.gsoECN == VirtioNetHeader.gsoTCPv4 else {
                        throw .unsupportedGSO
                    }
                    if let range = try encapsulateWhole(
                        p, ip: ip, tcp: transport, header: h, destination: destination, flowHash: flowHash)
                    {
                        emit(p, range)
                        counters.gsoFramesWhole &+= 1
                        counters.packetsIn &+= 1
                        counters.bytesIn &+= UInt64(ip.totalLength)
                        return .emitted(segments: 1)
                    }
                    var failure: DropReason?
                    let n = try Offload.segmentTCPv4(
                        p, ip: ip, tcp: transport, mss: Int(h.gsoSize), scratch: scratch,
                        headroom: settings.headroom
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
        return try frameForDevice(p, outer: range, tunnel: nil)
    }

    /// The whole-frame path (`Output.tap`, VXLAN, TCP/IPv4 GSO): outer headers once in front of the
    /// super-frame and a tunnel GSO header for the kernel. Nil when the frame must be split instead (another
    /// output or encapsulation, or an outer packet above 65535 bytes).
    private func encapsulateWhole(
        _ p: PacketBytes, ip: IPv4Info, tcp: TransportInfo, header h: VirtioNetHeader, destination: UInt32,
        flowHash: UInt64
    ) throws(DropReason) -> Range<Int>? {
        guard case .tap = settings.output, case .vxlan(let vxlan) = settings.kind,
            ip.proto == IPProtocolNumber.tcp, ip.totalLength + Encapsulation.vxlanOverhead <= 65535
        else { return nil }
        let mss = Int(h.gsoSize)
        guard mss >= Offload.minimumSegmentSize else { throw .badOffloadHeader }
        // The kernel finishes the inner TCP checksum per segment from the pseudo-header sum (what Linux's TCP
        // leaves there for a partial checksum; a GRO frame with a complete checksum of its first segment gets
        // it too).
        Offload.refreshPseudoHeaderChecksum(p, ip: ip, transport: tcp)
        let identification = reserveSegments(
            ip: ip, tcp: tcp, segmentSize: mss, overhead: Encapsulation.vxlanOverhead)
        let outer = try Encapsulation.vxlan(
            p, inner: ip, settings: vxlan, source: settings.localAddress, destination: destination,
            sourcePort: Encapsulation.vxlanSourcePort(flowHash: flowHash), identification: identification)
        let frameStart = outer.lowerBound - Ethernet.headerLength
        let outerUDP = outer.lowerBound + IPv4Header.minLength
        let tunnel = VirtioNetTunnelHeader.vxlanTCPv4(
            outerTransportOffset: outerUDP - frameStart, innerNetworkOffset: ip.offset - frameStart,
            innerTransportOffset: tcp.offset - frameStart, innerHeadersEnd: tcp.offset + tcp.headerLength - frameStart,
            segmentSize: h.gsoSize, ecn: h.gsoType & VirtioNetHeader.gsoECN != 0)
        return try frameForDevice(p, outer: outer, tunnel: tunnel)
    }

    /// The IPIP TAP path (`Output.ipipTAP`): no outer header is written here, the device's tcx program adds it.
    /// A TCP/IPv4 super-frame goes whole with a TCPv4 GSO header (NEEDS_CSUM, inner checksum field = pseudo-header
    /// sum, as on the VXLAN path), written in place before the received frame; one whose outer packet would pass
    /// 65535 bytes is split in software into plain frames. Other packets go as they are, a partial checksum kept
    /// partial (its start moved to the new frame). Returns the number of frames emitted.
    private func forwardToIPIPDevice(
        _ p: PacketBytes, frameStart: Int, ip: IPv4Info, tcp: TransportInfo, offload: VirtioNetHeader?,
        destination: UInt32, deviceMAC: MACAddress, scratch: PacketBytes, emit: (PacketBytes, Range<Int>) -> Void
    ) throws(DropReason) -> Int {
        let overhead = Encapsulation.ipipOverhead
        if let h = offload, h.isGSO {
            guard h.gsoType & ~VirtioNetHeader.gsoECN == VirtioNetHeader.gsoTCPv4, ip.proto == IPProtocolNumber.tcp
            else { throw .unsupportedGSO }
            let mss = Int(h.gsoSize)
            // The same bound as the other paths; the program then lowers gso_size by the outer header
            // (bpf_skb_adjust_room without FIXED_GSO), which leaves at least 44 bytes per segment.
            guard mss >= Offload.minimumSegmentSize else { throw .badOffloadHeader }
            guard ip.totalLength + overhead <= 65535 else {
                var failure: DropReason?
                let n = try Offload.segmentTCPv4(
                    p, ip: ip, tcp: tcp, mss: mss, scratch: scratch, headroom: settings.headroom
                ) { segment in
                    do throws(DropReason) {
                        identification &+= 1
                        if segment.totalLength + overhead > settings.mtu { counters.exceedsMTU &+= 1 }
                        emit(
                            scratch,
                            try ipipFrame(
                                scratch, inner: segment, header: VirtioNetHeader(), destination: destination,
                                identification: identification, deviceMAC: deviceMAC))
                    } catch {
                        failure = error
                    }
                }
                if let failure { throw failure }
                counters.gsoFrames &+= 1
                counters.gsoSegments &+= UInt64(n)
                return n
            }
            Offload.refreshPseudoHeaderChecksum(p, ip: ip, transport: tcp)
            // The program lowers gso_size by the outer header, so the kernel cuts `mss - overhead` per segment.
            let first = reserveSegments(ip: ip, tcp: tcp, segmentSize: mss - overhead, overhead: overhead)
            let header = VirtioNetHeader(
                flags: VirtioNetHeader.needsChecksum, gsoType: h.gsoType,
                headerLength: UInt16(Ethernet.headerLength + ip.headerLength + tcp.headerLength), gsoSize: h.gsoSize,
                checksumStart: UInt16(Ethernet.headerLength + ip.headerLength), checksumOffset: 16)
            emit(
                p,
                try ipipFrame(
                    p, inner: ip, header: header, destination: destination, identification: first,
                    deviceMAC: deviceMAC))
            counters.gsoFramesWhole &+= 1
            return 1
        }
        guard ip.totalLength + overhead <= 65535 else { throw .tooBig }
        let header =
            try offload?.partialChecksumMoved(
                from: frameStart, to: ip.offset - Ethernet.headerLength, packet: ip) ?? VirtioNetHeader()
        identification &+= 1
        if ip.totalLength + overhead > settings.mtu { counters.exceedsMTU &+= 1 }
        emit(
            p,
            try ipipFrame(
                p, inner: ip, header: header, destination: destination, identification: identification,
                deviceMAC: deviceMAC))
        return 1
    }

    /// For a super-frame the kernel will segment at `segmentSize` payload bytes: reserves one outer IP id per
    /// segment (the kernel numbers them from the one we give it) and counts the segments whose outer packet
    /// (`overhead` bytes of outer headers) passes the MTU — every full one, and a short last one. Returns the
    /// first id.
    private func reserveSegments(ip: IPv4Info, tcp: TransportInfo, segmentSize: Int, overhead: Int) -> UInt16 {
        let headers = ip.headerLength + tcp.headerLength
        let payload = ip.totalLength - headers
        let segments = max(1, (payload + segmentSize - 1) / segmentSize)
        let first = identification &+ 1
        identification &+= UInt16(truncatingIfNeeded: segments)
        if headers + segmentSize + overhead > settings.mtu { counters.exceedsMTU &+= UInt64(payload / segmentSize) }
        if payload % segmentSize != 0, headers + payload % segmentSize + overhead > settings.mtu {
            counters.exceedsMTU &+= 1
        }
        return first
    }

    /// Writes `header` and an Ethernet header (to the TAP, from the backend and id for the program) before the
    /// inner packet `inner`; returns the frame.
    private func ipipFrame(
        _ p: PacketBytes, inner: IPv4Info, header: VirtioNetHeader, destination: UInt32, identification: UInt16,
        deviceMAC: MACAddress
    ) throws(DropReason) -> Range<Int> {
        let ethernet = inner.offset - Ethernet.headerLength
        let start = ethernet - VirtioNetHeader.length
        guard start >= 0, inner.end <= p.count else { throw .tooBig }
        header.write(into: p, at: start)
        Ethernet.write(
            into: p, at: ethernet, destination: deviceMAC,
            source: IPIPEncapsulationProgram.sourceMAC(backend: destination, identification: identification),
            etherType: Ethernet.typeIPv4)
        return start..<inner.end
    }

    /// For `Output.tap`: writes the virtio_net_hdr (`tunnel`, or one without offloads) and an Ethernet header
    /// to the TAP's MAC in front of the outer packet `outer`; returns the whole frame. Unchanged otherwise.
    private func frameForDevice(
        _ p: PacketBytes, outer: Range<Int>, tunnel: VirtioNetTunnelHeader?
    ) throws(DropReason) -> Range<Int> {
        guard case .tap(let mac) = settings.output else { return outer }
        let ethernet = outer.lowerBound - Ethernet.headerLength
        let start = ethernet - VirtioNetTunnelHeader.length
        guard start >= 0 else { throw .tooBig }
        (tunnel ?? VirtioNetTunnelHeader()).write(into: p, at: start)
        Ethernet.write(
            into: p, at: ethernet, destination: mac, source: settings.frame.localMAC, etherType: Ethernet.typeIPv4)
        return start..<outer.upperBound
    }
}
