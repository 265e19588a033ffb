import CFulcrumLinux
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The backend side of IPIP for kernels without the ipip module (`fulcrum decap --ipip`). Two ways, chosen by
/// `Input`:
///
/// - **In the kernel** (`.kernelProgram`, the default of the command): a tcx ingress program
///   (`IPIPDecapsulationProgram`) on each of the host's Ethernet interfaces strips the outer header of whole,
///   option-less IPIP frames for that interface's addresses before the IP stack sees them, so the inner packet is
///   delivered in place — GSO super-frames included, no copy. The AF_PACKET socket is then **not** opened: it
///   would have nothing left to do (bound to ETH_P_IP it runs after tcx and sees the inner packet), and a tap
///   (ETH_P_ALL, before tcx) would see the frame still encapsulated and deliver it a second time. What the program passes on (outer fragments, which the kernel reassembles; options; another of
///   the host's addresses) reaches the raw socket as IPIP and is decapsulated here into the TUN. When a program
///   cannot be loaded or attached (no CAP_BPF, no tcx before Linux 6.6, a verifier rejection) the decapsulator
///   falls back to the packet-socket path and `fallbackReason` says why.
/// - **In user space** (`.packetSocket`): the stripped inner packet is written into a TUN device, so the kernel
///   delivers it to the VIP on `lo` as if it had arrived plain. The TUN must be up and `rp_filter` must not drop
///   packets whose source is routed elsewhere (set it to 0 or 2).
///
/// User-space input: an AF_PACKET socket for IPv4 on every Ethernet interface with `PACKET_VNET_HDR`, filtered in
/// the kernel (classic BPF) to frames for this host, protocol 4, not fragments. It receives a GSO super-frame whole
/// (the balancer's IPIP GSO path keeps them whole across veths and bridges) together with its GSO size and checksum
/// state, which a raw socket does not tell; `IPIPDecapsulation` turns that into one TUN write with a TCPv4 GSO
/// header (the TUN is opened with IFF_VNET_HDR and TSO4), so the backend's TCP gets up to 64 KB per call. A raw
/// socket for protocol 4 stays open: without one the kernel answers every IPIP packet with protocol-unreachable.
/// It also carries what AF_PACKET skips — outer fragments, after the kernel reassembled them (those, flagged by
/// `IP_RECVFRAGSIZE`, are decapsulated from it; every other packet it sees is read and discarded). Without the
/// packet socket (`.rawSocket`, or it could not be opened) everything comes from the raw socket, as plain packets.
public final class IPIPDecapsulator: Sendable {
    public struct Statistics: Sendable, Equatable {
        /// Inner packets written into the TUN.
        public var decapsulated: UInt64 = 0
        /// Of those, TCP GSO super-frames written whole (one write for many segments).
        public var gsoWrites: UInt64 = 0
        /// Of those, packets reassembled from outer fragments (raw socket).
        public var reassembled: UInt64 = 0
        /// TUN writes the kernel refused.
        public var writeFailures: UInt64 = 0
        public var drops = DropCounters()
    }

    /// Where frames are decapsulated.
    public enum Input: Sendable, Equatable {
        /// tcx programs on `interfaces` (nil: every Ethernet interface with an IPv4 address) strip whole frames in
        /// the kernel; the raw socket takes what they pass on. Falls back to `.packetSocket`.
        case kernelProgram(interfaces: [String]?)
        /// AF_PACKET with virtio_net_hdr (whole GSO frames into the TUN) plus the raw socket for reassembled
        /// fragments.
        case packetSocket
        /// The raw socket alone: every packet, GSO frames as plain packets.
        case rawSocket
    }

    public let device: TUNDevice
    public let input: RawIPSocket
    /// The attached decapsulation programs, one per interface (empty: the user-space path runs).
    public let programs: [(interface: String, program: TCXIngressProgram)]
    /// Why `.kernelProgram` was asked for but the packet-socket path runs (for the operator's log).
    public let fallbackReason: String?
    /// The AF_PACKET input (nil: it could not be opened, `packetSocketError` says why; the raw socket serves).
    private let packetFD: Int32?
    public let packetSocketError: PacketIOError?
    /// The namespace the sockets were opened in; the worker joins it to read the host's addresses there.
    private let networkNamespace: String?
    private let loop = PacketWorkerLoop()
    private let published = Mutex(Statistics())

    /// Opens the TUN device (with offloads) and the sockets (in `networkNamespace` when given) and, for
    /// `.kernelProgram`, attaches the programs; with `setUp` the device is also set up, which the kernel needs
    /// before it delivers what is written into it.
    public init(
        tunName: String, networkNamespace: String? = nil, setUp: Bool = false, input path: Input = .packetSocket
    ) throws(PacketIOError) {
        self.networkNamespace = networkNamespace
        typealias Opened = (
            TUNDevice, RawIPSocket, Int32?, PacketIOError?, [(interface: String, program: TCXIngressProgram)], String?
        )
        let open = { @Sendable () throws(PacketIOError) -> Opened in
            let device = try TUNDevice(name: tunName, offloads: true)
            let input = try RawIPSocket(protocol: 4)
            if setUp { try device.setUp(using: input.fd) }
            var fallback: String?
            switch path {
            case .rawSocket:
                return (device, input, nil, nil, [], nil)
            case .kernelProgram(let interfaces):
                do throws(PacketIOError) {
                    let programs = try Self.attachPrograms(
                        interfaces: interfaces, skipping: device.name, probe: input.fd)
                    if !programs.isEmpty {
                        // Best effort: only counts the reassembled packets (every packet from the raw socket is
                        // decapsulated on this path).
                        var one: Int32 = 1
                        _ = setsockopt(
                            input.fd, Int32(IPPROTO_IP), fulcrum_IP_RECVFRAGSIZE, &one,
                            socklen_t(MemoryLayout<Int32>.size))
                        return (device, input, nil, nil, programs, nil)
                    }
                    fallback = "no Ethernet interface with an IPv4 address to attach the IPIP decapsulation program to"
                } catch {
                    fallback = "IPIP decapsulation program not attached (\(error))"
                }
            case .packetSocket:
                break
            }
            do throws(PacketIOError) {
                let fd = try Self.openPacketSocket()
                var one: Int32 = 1
                // Only reassembled packets are wanted from the raw socket now: have the kernel flag them.
                guard
                    setsockopt(
                        input.fd, Int32(IPPROTO_IP), fulcrum_IP_RECVFRAGSIZE, &one, socklen_t(MemoryLayout<Int32>.size))
                        == 0
                else {
                    let code = errno
                    close(fd)
                    throw PacketIOError("IP_RECVFRAGSIZE on the IPIP raw socket", errno: code)
                }
                return (device, input, fd, nil, [], fallback)
            } catch {
                return (device, input, nil, error, [], fallback)
            }
        }
        if let networkNamespace {
            (device, input, packetFD, packetSocketError, programs, fallbackReason) = try NetworkNamespace.perform(
                path: networkNamespace, open)
        } else {
            (device, input, packetFD, packetSocketError, programs, fallbackReason) = try open()
        }
        input.setReceiveBuffer(4 << 20)
    }

    deinit {
        if let packetFD { close(packetFD) }
    }

    /// Whether GSO super-frames can arrive whole (the AF_PACKET input is open).
    public var usesPacketSocket: Bool { packetFD != nil }

    /// Whether the kernel decapsulates (the programs are attached).
    public var usesKernelProgram: Bool { !programs.isEmpty }

    /// Loads and attaches one `IPIPDecapsulationProgram` to each interface — `interfaces`, or every Ethernet
    /// interface with an IPv4 address but `skipping` — with that interface's IPv4 addresses as the destinations
    /// it decapsulates (read now: an address added later takes the raw-socket path). All or nothing: the first
    /// failure throws and detaches the programs attached before it. `probe` is any socket in the namespace.
    static func attachPrograms(
        interfaces: [String]?, skipping: String, probe: Int32
    ) throws(PacketIOError) -> [(interface: String, program: TCXIngressProgram)] {
        var addresses: [String: [UInt32]] = [:]
        var order: [String] = []
        for (label, address) in InterfaceAddress.allIPv4() {
            // An alias label ("eth0:1") names its device before the colon.
            let name = String(label.split(separator: ":", maxSplits: 1).first ?? Substring(label))
            if addresses[name] == nil { order.append(name) }
            addresses[name, default: []].append(address)
        }
        var chosen: [String] = []
        if let interfaces {
            for name in interfaces where !chosen.contains(name) {
                let hardware = fulcrum_if_hwtype(probe, name)
                guard hardware >= 0 else { throw PacketIOError("interface \(name)", errno: -hardware) }
                guard hardware == 1 else {
                    throw PacketIOError("interface \(name) is not an Ethernet device", errno: ENOTSUP)
                }
                guard addresses[name] != nil else {
                    throw PacketIOError("interface \(name) has no IPv4 address", errno: EADDRNOTAVAIL)
                }
                chosen.append(name)
            }
        } else {
            chosen = order.filter { $0 != skipping && fulcrum_if_hwtype(probe, $0) == 1 }
        }
        var attached: [(interface: String, program: TCXIngressProgram)] = []
        for name in chosen {
            let index = if_nametoindex(name)
            guard index > 0 else { throw PacketIOError("if_nametoindex \(name)", errno: errno) }
            let program = try TCXIngressProgram(
                instructions: IPIPDecapsulationProgram.instructions(localAddresses: addresses[name] ?? []),
                interfaceIndex: Int32(index), name: "fulcrum_decap")
            attached.append((name, program))
        }
        return attached
    }

    public var statistics: Statistics { published.withLock { $0 } }

    public func start() throws(PacketIOError) {
        try loop.start { [self] in
            // The worker reads the host's addresses (`LocalAddresses`): those of the namespace its sockets were
            // opened in. (Were it deleted since, every frame would show as a `not_local` drop.)
            if let networkNamespace { try? NetworkNamespace.join(path: networkNamespace) }
            run()
        }
    }

    public func stop() {
        loop.stop()
    }

    /// The classic BPF filter of the packet socket (offsets from the Ethernet header): Ethernet devices only,
    /// frames for this host, IPv4 protocol 4, not a fragment (MF or an offset: the raw socket gets those
    /// reassembled). Anything else is dropped before the kernel copies it.
    static let filter: [sock_filter] = {
        func statement(_ code: Int32, _ k: Int32) -> sock_filter {
            sock_filter(code: UInt16(code), jt: 0, jf: 0, k: UInt32(bitPattern: k))
        }
        func jump(_ code: Int32, _ k: Int32, _ jt: UInt8, _ jf: UInt8) -> sock_filter {
            sock_filter(code: UInt16(code), jt: jt, jf: jf, k: UInt32(bitPattern: k))
        }
        let ld = Int32(BPF_LD)
        let (w, h, b, abs) = (Int32(BPF_W), Int32(BPF_H), Int32(BPF_B), Int32(BPF_ABS))
        let (jeq, jset, k) = (Int32(BPF_JMP | BPF_JEQ), Int32(BPF_JMP | BPF_JSET), Int32(BPF_K))
        let ret = Int32(BPF_RET)
        return [
            statement(ld | w | abs, fulcrum_SKF_AD_HATYPE),  // 0
            jump(jeq | k, 1, 0, 8),  // 1: ARPHRD_ETHER
            statement(ld | w | abs, fulcrum_SKF_AD_PKTTYPE),  // 2
            jump(jeq | k, 0, 0, 6),  // 3: PACKET_HOST
            statement(ld | h | abs, 12),  // 4: EtherType
            jump(jeq | k, 0x0800, 0, 4),  // 5
            statement(ld | b | abs, 23),  // 6: IP protocol
            jump(jeq | k, 4, 0, 2),  // 7
            statement(ld | h | abs, 20),  // 8: flags + fragment offset
            jump(jset | k, 0x3FFF, 0, 1),  // 9: a fragment → drop, else accept
            statement(ret | k, 0),  // 10: drop
            statement(ret | k, 0x40000),  // 11: accept (whole frame)
        ]
    }()

    /// AF_PACKET, IPv4, every interface (the balancer's packets come in on whichever one routes to it),
    /// PACKET_VNET_HDR, the filter above, a 4 MB receive buffer, non-blocking.
    private static func openPacketSocket() throws(PacketIOError) -> Int32 {
        let fd = try PacketSocket.open(protocol: fulcrum_ETH_P_IP, interfaceIndex: 0, what: "the IPIP packet socket") {
            fd in
            let attached = filter.withUnsafeBufferPointer {
                fulcrum_attach_socket_filter(fd, $0.baseAddress, UInt16($0.count))
            }
            return attached == 0 ? nil : ("SO_ATTACH_FILTER", -attached)
        }
        let flags = fcntl(fd, F_GETFL)
        guard flags >= 0, fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0 else {
            let code = errno
            close(fd)
            throw PacketIOError("O_NONBLOCK on the IPIP packet socket", errno: code)
        }
        return fd
    }

    private func run() {
        var stats = Statistics()
        let slotSize = VirtioNetHeader.length + 65536
        let batch = MessageBatch(count: 16, slotSize: 64 + slotSize, headroom: 64)
        // The raw socket's buffer: with the packet socket, big enough for a reassembled packet, and a GSO packet
        // it also sees (and we discard) is truncated to this, so the kernel copies little; alone, 64 KB.
        let rawCapacity = packetFD == nil ? 65536 : 4096
        let rawBuffer = UnsafeMutableRawBufferPointer.allocate(
            byteCount: VirtioNetHeader.length + rawCapacity, alignment: 16)
        defer { rawBuffer.deallocate() }
        let control = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 16)
        defer { control.deallocate() }
        let local = LocalAddresses()
        var fds = [pollfd(fd: input.fd, events: Int16(POLLIN), revents: 0)]
        if let packetFD { fds.append(pollfd(fd: packetFD, events: Int16(POLLIN), revents: 0)) }
        while !loop.isStopping {
            for i in fds.indices { fds[i].revents = 0 }
            local.refresh(olderThan: LocalAddresses.period)
            guard poll(&fds, nfds_t(fds.count), 100) > 0 else { continue }
            if let packetFD, fds[1].revents != 0 {
                let received = batch.receive(packetFD)
                for i in 0..<received {
                    let bytes = batch.slot(i)
                    let length = batch.length(i) - VirtioNetHeader.length
                    do throws(DropReason) {
                        let offload = try VirtioNetHeader(bytes, at: batch.headroom)
                        let prepared = try IPIPDecapsulation.prepare(
                            bytes, frameStart: batch.headroom + VirtioNetHeader.length, length: length,
                            offload: offload, isLocal: local.contains)
                        write(prepared, bytes, &stats)
                    } catch {
                        stats.drops.record(error)
                    }
                }
            }
            if fds[0].revents != 0 {
                for _ in 0..<64 {
                    let bytes = PacketBytes(rawBuffer)
                    let (n, reassembled, truncated) = receiveRaw(into: rawBuffer, control: control)
                    if n <= 0 { break }
                    // With the packet socket open, it already had everything that came whole.
                    guard packetFD == nil || reassembled else { continue }
                    do throws(DropReason) {
                        guard !truncated else { throw .tooBig }
                        let prepared = try IPIPDecapsulation.prepareWhole(
                            bytes, at: VirtioNetHeader.length, limit: VirtioNetHeader.length + n)
                        write(prepared, bytes, &stats)
                        if reassembled { stats.reassembled &+= 1 }
                    } catch {
                        stats.drops.record(error)
                    }
                }
            }
            published.withLock { $0 = stats }
        }
    }

    @inline(__always)
    private func write(_ prepared: IPIPDecapsulation.Prepared, _ bytes: PacketBytes, _ stats: inout Statistics) {
        let range = prepared.range
        if Glibc.write(device.fd, bytes.raw.baseAddress! + range.lowerBound, range.count) == range.count {
            stats.decapsulated &+= 1
            if prepared.header.isGSO { stats.gsoWrites &+= 1 }
        } else {
            stats.writeFailures &+= 1
        }
    }

    /// One packet from the raw socket into `buffer` after room for a `VirtioNetHeader`: its length (≤ 0: none),
    /// whether the kernel reassembled it (an `IP_RECVFRAGSIZE` control message) and whether it was cut short.
    private func receiveRaw(
        into buffer: UnsafeMutableRawBufferPointer, control: UnsafeMutableRawBufferPointer
    ) -> (Int, Bool, Bool) {
        var vector = iovec(
            iov_base: buffer.baseAddress! + VirtioNetHeader.length, iov_len: buffer.count - VirtioNetHeader.length)
        var message = msghdr()
        return withUnsafeMutablePointer(to: &vector) { vectorPointer in
            message.msg_iov = vectorPointer
            message.msg_iovlen = 1
            message.msg_control = control.baseAddress
            message.msg_controllen = control.count
            let n = recvmsg(input.fd, &message, Int32(MSG_DONTWAIT))
            guard n > 0 else { return (n, false, false) }
            var reassembled = false
            // A control message of level IPPROTO_IP, type IP_RECVFRAGSIZE (cmsghdr: length, level, type).
            if message.msg_controllen >= MemoryLayout<cmsghdr>.size {
                var offset = 0
                while offset + MemoryLayout<cmsghdr>.size <= Int(message.msg_controllen) {
                    let header = control.load(fromByteOffset: offset, as: cmsghdr.self)
                    if header.cmsg_level == Int32(IPPROTO_IP) && header.cmsg_type == fulcrum_IP_RECVFRAGSIZE {
                        reassembled = true
                    }
                    let length = (Int(header.cmsg_len) + 7) & ~7
                    guard length > 0 else { break }
                    offset += length
                }
            }
            return (n, reassembled, message.msg_flags & Int32(MSG_TRUNC) != 0)
        }
    }
}

/// This host's IPv4 addresses for the decapsulator's packet socket, which sees every frame sent to the host's
/// MACs — also those the kernel would forward, not deliver. Read again every `period`, and at most every
/// `missPeriod` when a frame names an address not (yet) known, so an address added while running counts
/// within 100 ms. Confined to the worker thread.
final class LocalAddresses {
    static let period: UInt64 = 1_000_000_000
    static let missPeriod: UInt64 = 100_000_000
    private var addresses: Set<UInt32> = []
    private var readAt: UInt64 = 0

    init() {
        read()
    }

    func contains(_ address: UInt32) -> Bool {
        if addresses.contains(address) { return true }
        refresh(olderThan: Self.missPeriod)
        return addresses.contains(address)
    }

    func refresh(olderThan age: UInt64) {
        if MonotonicClock.now() &- readAt >= age { read() }
    }

    private func read() {
        addresses = Set(InterfaceAddress.allIPv4().map(\.address))
        readAt = MonotonicClock.now()
    }
}

@available(*, unavailable)
extension LocalAddresses: Sendable {}
