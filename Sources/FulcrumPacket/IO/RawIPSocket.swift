import CFulcrumLinux

#if canImport(Glibc)
import Glibc
#endif

/// A raw IPv4 socket. With `IPPROTO_RAW` it sends complete IPv4 packets we built (IP_HDRINCL): the kernel
/// routes them and adds the link layer. The kernel refuses (EMSGSIZE) a packet above the route's MTU.
/// With another protocol (4, IPIP) it receives every packet of that protocol, IP header included.
public final class RawIPSocket: Sendable {
    public let fd: Int32

    /// Opens the socket in the calling thread's network namespace.
    public init(protocol proto: Int32 = Int32(IPPROTO_RAW)) throws(PacketIOError) {
        let fd = socket(AF_INET, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), proto)
        guard fd >= 0 else { throw PacketIOError("raw socket (protocol \(proto))", errno: errno) }
        self.fd = fd
    }

    /// Asks for a receive buffer of `bytes` (see `SocketOptions.setReceiveBuffer`).
    public func setReceiveBuffer(_ bytes: Int32) {
        SocketOptions.setReceiveBuffer(fd, bytes)
    }

    /// Sends one complete IPv4 packet to `destination` (host order); false when the kernel refused it.
    @discardableResult
    public func send(_ packet: UnsafeRawBufferPointer, to destination: UInt32) -> Bool {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = destination.bigEndian
        let sent = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                sendto(fd, packet.baseAddress, packet.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        return sent == packet.count
    }

    deinit {
        close(fd)
    }
}

/// Outer packets waiting to leave through a raw socket with one `sendmmsg`: the tunnel worker emits up to
/// ~45 packets per GSO super-frame, and one system call per packet (with its wake-ups of the receiving side)
/// was the limit. Packets are copied into fixed slots (the encapsulator reuses its scratch buffer for the
/// next segment); one larger than a slot is sent on its own, after flushing, so the order is kept.
final class RawSendBatch {
    let count: Int
    let slotSize: Int
    private let storage: UnsafeMutableRawBufferPointer
    private let iovecs: UnsafeMutablePointer<iovec>
    private let headers: UnsafeMutablePointer<fulcrum_mmsghdr>
    private let addresses: UnsafeMutablePointer<sockaddr_in>
    private(set) var pending = 0

    init(count: Int = 64, slotSize: Int = 2048) {
        self.count = max(1, count)
        self.slotSize = slotSize
        storage = UnsafeMutableRawBufferPointer.allocate(byteCount: self.count * slotSize, alignment: 64)
        iovecs = .allocate(capacity: self.count)
        headers = .allocate(capacity: self.count)
        addresses = .allocate(capacity: self.count)
    }

    deinit {
        storage.deallocate()
        iovecs.deallocate()
        headers.deallocate()
        addresses.deallocate()
    }

    /// Queues one complete IPv4 packet for `destination` (host order), flushing first when full; returns
    /// how many packets the kernel refused meanwhile.
    func queue(_ packet: UnsafeRawBufferPointer, to destination: UInt32, on socket: RawIPSocket) -> Int {
        guard packet.count <= slotSize else {
            let failed = flush(socket)
            return failed + (socket.send(packet, to: destination) ? 0 : 1)
        }
        let failed = pending == count ? flush(socket) : 0
        let i = pending
        let slot = storage.baseAddress! + i * slotSize
        slot.copyMemory(from: packet.baseAddress!, byteCount: packet.count)
        iovecs[i] = iovec(iov_base: slot, iov_len: packet.count)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = destination.bigEndian
        addresses[i] = address
        var header = fulcrum_mmsghdr()
        header.msg_hdr.msg_iov = iovecs + i
        header.msg_hdr.msg_iovlen = 1
        header.msg_hdr.msg_name = UnsafeMutableRawPointer(addresses + i)
        header.msg_hdr.msg_namelen = socklen_t(MemoryLayout<sockaddr_in>.size)
        headers[i] = header
        pending += 1
        return failed
    }

    /// Sends the queued packets (sendmmsg, going on after a refused one); returns how many failed.
    @discardableResult
    func flush(_ socket: RawIPSocket) -> Int {
        var sent = 0
        var failed = 0
        while sent < pending {
            let n = fulcrum_sendmmsg(socket.fd, headers + sent, UInt32(pending - sent), 0)
            if n <= 0 {
                // The kernel refused message `sent` (EMSGSIZE above the MTU, ENOBUFS): count it, go on.
                failed += 1
                sent += 1
            } else {
                sent += Int(n)
            }
        }
        pending = 0
        return failed
    }
}

/// Socket options shared by the packet sockets.
enum SocketOptions {
    /// Asks for a receive buffer of `bytes`, beyond `rmem_max` when privileged: a burst (a split GSO frame,
    /// a full batch while the worker is busy) overflows the default ~200 KB and the excess is lost.
    static func setReceiveBuffer(_ fd: Int32, _ bytes: Int32) {
        var size = bytes
        let length = socklen_t(MemoryLayout<Int32>.size)
        if setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, length) != 0 {
            _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, length)
        }
    }
}
