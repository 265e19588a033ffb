import CFulcrumLinux

#if canImport(Glibc)
import Glibc
#endif

/// A TUN device (layer 3, no packet-information prefix) opened with TUNSETIFF. One read returns one IPv4
/// packet, one write sends one. Without `offloads` checksums arrive complete and the kernel segments before
/// the device; with it every packet is preceded by a `VirtioNetHeader` and may be a GSO super-frame with a
/// partial checksum (one system call per up to 64 KB instead of per 1500 bytes).
public final class TUNDevice: Sendable {
    public let fd: Int32
    /// The interface name the kernel gave it.
    public let name: String
    /// Whether reads and writes carry a `VirtioNetHeader` (IFF_VNET_HDR with TSO4 and checksum offload).
    public let offloads: Bool

    /// Opens (creating if needed) TUN interface `name` in the calling thread's network namespace,
    /// non-blocking. The interface is removed when the fd closes (unless made persistent elsewhere).
    /// `offloads` opens it with IFF_VNET_HDR and TUNSETOFFLOAD (checksum, TSO4, TSO ECN).
    public init(name: String, offloads: Bool = false) throws(PacketIOError) {
        var actual = [CChar](repeating: 0, count: Int(IFNAMSIZ))
        let tunFlags = fulcrum_IFF_TUN | fulcrum_IFF_NO_PI | (offloads ? fulcrum_IFF_VNET_HDR : 0)
        let fd = fulcrum_tun_open(name, tunFlags, &actual)
        guard fd >= 0 else { throw PacketIOError("open TUN \(name)", errno: -fd) }
        if offloads {
            let rc = fulcrum_tun_set_offload(fd, fulcrum_TUN_F_CSUM | fulcrum_TUN_F_TSO4 | fulcrum_TUN_F_TSO_ECN)
            guard rc == 0 else {
                close(fd)
                throw PacketIOError("TUNSETOFFLOAD on TUN \(name)", errno: -rc)
            }
        }
        self.offloads = offloads
        let flags = fcntl(fd, F_GETFL)
        guard flags >= 0, fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0 else {
            let saved = errno
            close(fd)
            throw PacketIOError("O_NONBLOCK on TUN \(name)", errno: saved)
        }
        self.fd = fd
        self.name = String(decoding: actual.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Sets the interface up (`ip link set NAME up`), in the namespace the device was opened in: `socket` is
    /// any socket of that namespace (the device's own fd does not take interface ioctls).
    public func setUp(using socket: Int32) throws(PacketIOError) {
        let rc = fulcrum_link_up(socket, name)
        guard rc == 0 else { throw PacketIOError("set \(name) up", errno: -rc) }
    }

    /// Sets the interface up from the calling thread's network namespace (a throwaway UDP socket carries the
    /// ioctl).
    public func setUp() throws(PacketIOError) {
        let socketFD = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard socketFD >= 0 else { throw PacketIOError("socket for set \(name) up", errno: errno) }
        defer { close(socketFD) }
        try setUp(using: socketFD)
    }

    deinit {
        close(fd)
    }
}

/// Runs code inside another network namespace (a file like `/var/run/netns/NAME`): on a fresh thread that
/// joins the namespace, so the caller's threads stay where they are. File descriptors opened there (a TUN
/// device, a socket) keep belonging to that namespace after the thread ends.
public enum NetworkNamespace {
    public static func perform<T: Sendable>(
        path: String, _ body: @escaping @Sendable () throws(PacketIOError) -> T
    ) throws(PacketIOError) -> T {
        let result = try WorkerThread.runToCompletion { () -> Result<T, PacketIOError> in
            do throws(PacketIOError) {
                try join(path: path)
                return .success(try body())
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    /// Moves the calling thread (only it) into the namespace: for a worker thread that must see the
    /// namespace's interfaces while it runs, not just use sockets opened there.
    public static func join(path: String) throws(PacketIOError) {
        let nsfd = open(path, O_RDONLY | O_CLOEXEC)
        guard nsfd >= 0 else { throw PacketIOError("open \(path)", errno: errno) }
        defer { close(nsfd) }
        guard fulcrum_setns_net(nsfd) == 0 else { throw PacketIOError("setns \(path)", errno: errno) }
    }
}
