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
