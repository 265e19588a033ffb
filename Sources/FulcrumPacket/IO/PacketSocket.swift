import CFulcrumLinux

#if canImport(Glibc)
import Glibc
#endif

/// An AF_PACKET socket bound to one interface, for all EtherTypes, with `PACKET_VNET_HDR`: every frame is
/// preceded by a 10-byte `virtio_net_hdr` on receive and must be on send. It receives incoming frames only
/// (`PACKET_IGNORE_OUTGOING`). Passing the header back unchanged
/// keeps the kernel's CHECKSUM_PARTIAL and GSO metadata (NETWORK-LAB.md: without it, resent veth frames
/// arrive with bad checksums or fail with EMSGSIZE).
public final class PacketSocket: Sendable {
    public let fd: Int32
    public let interface: String
    public let interfaceIndex: Int32
    public let mac: MACAddress

    /// Opens the socket in the calling thread's network namespace.
    public init(interface: String) throws(PacketIOError) {
        let index = if_nametoindex(interface)
        guard index > 0 else { throw PacketIOError("interface \(interface)", errno: errno) }
        let fd = try Self.open(protocol: fulcrum_ETH_P_ALL, interfaceIndex: Int32(index), what: interface) { fd in
            var one: Int32 = 1
            // Frames this host sends out of the interface are of no use to the workers (they skipped them), but the
            // kernel cloned and copied every one to us: for a tunnel that is each outer packet, up to 64 KB a
            // frame. Best effort (Linux 4.20+); the workers still skip `PACKET_OUTGOING`.
            _ = setsockopt(
                fd, fulcrum_SOL_PACKET, fulcrum_PACKET_IGNORE_OUTGOING, &one, socklen_t(MemoryLayout<Int32>.size))
            return nil
        }
        var m = [UInt8](repeating: 0, count: 6)
        let got = fulcrum_packet_local_mac(fd, &m)
        guard got == 0 else {
            close(fd)
            throw PacketIOError("getsockname on \(interface)", errno: -got)
        }
        self.fd = fd
        self.interface = interface
        interfaceIndex = Int32(index)
        mac = MACAddress(m[0], m[1], m[2], m[3], m[4], m[5])
    }

    /// Sends one frame with an empty virtio_net_hdr (ARP replies and announcements); false when it failed.
    @discardableResult
    public func sendPlain(_ frame: [UInt8]) -> Bool {
        let message = [UInt8](repeating: 0, count: VirtioNetHeader.length) + frame
        return message.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) } == message.count
    }

    deinit {
        close(fd)
    }

    /// An AF_PACKET socket for `protocol` (host order) with `PACKET_VNET_HDR`, bound to `interfaceIndex` (0: every
    /// interface) and a 4 MB receive buffer; `configure` runs before the bind (socket filters, options) and returns
    /// the failed operation's name and errno, or nil. `what` names the socket in errors. On failure nothing stays open.
    static func open(
        protocol: UInt16, interfaceIndex: Int32, what: String, configure: (Int32) -> (String, Int32)? = { _ in nil }
    ) throws(PacketIOError) -> Int32 {
        let fd = socket(AF_PACKET, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), Int32(`protocol`.bigEndian))
        guard fd >= 0 else { throw PacketIOError("AF_PACKET socket for \(what)", errno: errno) }
        func fail(_ operation: String, _ code: Int32) -> PacketIOError {
            close(fd)
            return PacketIOError("\(operation) on \(what)", errno: code)
        }
        var one: Int32 = 1
        guard
            setsockopt(fd, fulcrum_SOL_PACKET, fulcrum_PACKET_VNET_HDR, &one, socklen_t(MemoryLayout<Int32>.size)) == 0
        else { throw fail("PACKET_VNET_HDR", errno) }
        if let (operation, code) = configure(fd) { throw fail(operation, code) }
        let bound = fulcrum_packet_bind(fd, interfaceIndex, `protocol`)
        guard bound == 0 else { throw fail("bind", -bound) }
        SocketOptions.setReceiveBuffer(fd, 4 << 20)
        return fd
    }
}

/// Preallocated `recvmmsg`/`sendmmsg` state for one worker: `count` slots of `slotSize` bytes, their iovecs,
/// message headers and link-layer addresses. Not thread-safe (one worker owns it).
final class MessageBatch {
    let count: Int
    let slotSize: Int
    let storage: UnsafeMutableRawBufferPointer
    private let iovecs: UnsafeMutablePointer<iovec>
    private let headers: UnsafeMutablePointer<fulcrum_mmsghdr>
    private let addresses: UnsafeMutablePointer<sockaddr_ll>
    private let outIovecs: UnsafeMutablePointer<iovec>
    private let outHeaders: UnsafeMutablePointer<fulcrum_mmsghdr>
    private(set) var pendingSends = 0

    /// Bytes kept free at the start of every slot before the received message (room for outer headers).
    let headroom: Int

    init(count: Int, slotSize: Int, headroom: Int = 0) {
        precondition(headroom < slotSize)
        self.count = count
        self.slotSize = slotSize
        self.headroom = headroom
        storage = UnsafeMutableRawBufferPointer.allocate(byteCount: count * slotSize, alignment: 64)
        iovecs = .allocate(capacity: count)
        headers = .allocate(capacity: count)
        addresses = .allocate(capacity: count)
        outIovecs = .allocate(capacity: count)
        outHeaders = .allocate(capacity: count)
    }

    deinit {
        storage.deallocate()
        iovecs.deallocate()
        headers.deallocate()
        addresses.deallocate()
        outIovecs.deallocate()
        outHeaders.deallocate()
    }

    /// The bytes of slot `i`.
    func slot(_ i: Int) -> PacketBytes {
        PacketBytes(UnsafeMutableRawBufferPointer(rebasing: storage[(i * slotSize)..<((i + 1) * slotSize)]))
    }

    /// Receives up to `count` messages without blocking; returns how many (0 when none or on error).
    func receive(_ fd: Int32) -> Int {
        for i in 0..<count {
            iovecs[i] = iovec(iov_base: storage.baseAddress! + i * slotSize + headroom, iov_len: slotSize - headroom)
            var header = fulcrum_mmsghdr()
            header.msg_hdr.msg_iov = iovecs + i
            header.msg_hdr.msg_iovlen = 1
            header.msg_hdr.msg_name = UnsafeMutableRawPointer(addresses + i)
            header.msg_hdr.msg_namelen = socklen_t(MemoryLayout<sockaddr_ll>.size)
            headers[i] = header
        }
        let n = fulcrum_recvmmsg(fd, headers, UInt32(count), Int32(MSG_DONTWAIT))
        return max(0, Int(n))
    }

    func length(_ i: Int) -> Int { Int(headers[i].msg_len) }

    /// True when message `i` is one this host sent (AF_PACKET sees outgoing frames too).
    func isOutgoing(_ i: Int) -> Bool { addresses[i].sll_pkttype == fulcrum_PACKET_OUTGOING }

    /// Whether frame `i` was addressed to another host's MAC (seen only in promiscuous mode).
    func isOtherHost(_ i: Int) -> Bool { addresses[i].sll_pkttype == fulcrum_PACKET_OTHERHOST }

    /// Queues bytes `range` of slot `i` for `flushSends`.
    func queueSend(slot i: Int, range: Range<Int>) {
        outIovecs[pendingSends] = iovec(
            iov_base: storage.baseAddress! + i * slotSize + range.lowerBound, iov_len: range.count)
        var header = fulcrum_mmsghdr()
        header.msg_hdr.msg_iov = outIovecs + pendingSends
        header.msg_hdr.msg_iovlen = 1
        outHeaders[pendingSends] = header
        pendingSends += 1
    }

    /// Sends the queued messages (sendmmsg, retried for a partial batch); returns how many failed.
    @discardableResult
    func flushSends(_ fd: Int32) -> Int {
        var sent = 0
        var failed = 0
        while sent < pendingSends {
            let n = fulcrum_sendmmsg(fd, outHeaders + sent, UInt32(pendingSends - sent), 0)
            if n <= 0 {
                // Skip the message the kernel refused (EMSGSIZE, ENOBUFS) and go on with the rest.
                failed += 1
                sent += 1
            } else {
                sent += Int(n)
            }
        }
        pendingSends = 0
        return failed
    }
}
