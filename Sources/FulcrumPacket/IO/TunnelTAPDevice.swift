import CFulcrumLinux

#if canImport(Glibc)
import Glibc
#endif

/// The TAP device a tunnel service writes its frames into: the kernel receives them as if from a wire, routes
/// them to the backend and segments GSO super-frames itself.
///
/// Opened with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR and one of two `Format`s. VXLAN: a 24-byte header
/// (`VirtioNetTunnelHeader`) and the offloads checksum, TSO4, TSO ECN and UDP-tunnel GSO (Linux 6.17+); a TAP,
/// not a TUN, because the kernel checks the tunnel offsets against an Ethernet header and refuses the same frame
/// on a TUN. IPIP: the plain 10-byte `VirtioNetHeader` and checksum, TSO4, TSO ECN; the frames carry the inner
/// packet and the tcx program `IPIPEncapsulationProgram` adds the outer header (a TAP because that program
/// reads the backend from the Ethernet header). Frames received from the device are routed
/// like any others, so `configureForwarding` lets the kernel forward what arrives on this device only
/// (`forwarding=1`), accept our own address as the source (`accept_local=1`) and skip the reverse-path
/// check (`rp_filter=0`); the VIP's interface keeps `forwarding=0`, so the kernel never forwards the VIP's
/// frames itself. Nothing is read from the device; IPv6 is switched off on it so it sends nothing.
///
/// The effective `rp_filter` is the larger of the device's and `all`'s: under loose mode (`all.rp_filter=2`,
/// systemd's default) the kernel drops frames from a device without any IPv4 address, so the device gets
/// `placeholderAddress` (scope host). Strict mode (`all.rp_filter=1`) drops them regardless
/// (`strictReversePathFilter`): the tunnel service then uses its raw-socket path.
public final class TunnelTAPDevice: Sendable {
    /// 192.0.0.8/32, the IPv4 dummy address (RFC 7600): never routed, never a source we choose.
    public static let placeholderAddress: UInt32 = 0xC000_0008

    public let fd: Int32
    public let name: String
    /// The device's MAC address: the destination of the frames we write (the kernel's own, so it takes them).
    public let mac: MACAddress

    /// What the frames written into the device start with.
    public enum Format: Sendable, Equatable {
        /// `VirtioNetTunnelHeader` (24 bytes), UDP-tunnel GSO: VXLAN outer frames.
        case udpTunnel
        /// `VirtioNetHeader` (10 bytes), TCPv4 GSO: inner packets the IPIP program encapsulates.
        case plain

        var headerLength: Int { self == .udpTunnel ? VirtioNetTunnelHeader.length : VirtioNetHeader.length }
    }

    public let format: Format

    /// Opens (creating) TAP `name` in the calling thread's network namespace, non-blocking, and sets it up.
    /// Throws `PacketIOError` with the failing step; EINVAL from TUNSETOFFLOAD with `.udpTunnel` means the kernel
    /// has no UDP-tunnel GSO on TUN/TAP (before 6.17).
    public init(name: String, format: Format = .udpTunnel) throws(PacketIOError) {
        var actual = [CChar](repeating: 0, count: Int(IFNAMSIZ))
        let fd = fulcrum_tun_open(name, fulcrum_IFF_TAP | fulcrum_IFF_NO_PI | fulcrum_IFF_VNET_HDR, &actual)
        guard fd >= 0 else { throw PacketIOError("open TAP \(name)", errno: -fd) }
        func fail(_ operation: String, _ code: Int32) -> PacketIOError {
            close(fd)
            return PacketIOError("\(operation) on TAP \(name)", errno: code)
        }
        var rc = fulcrum_tun_set_vnet_header_size(fd, Int32(format.headerLength))
        guard rc == 0 else { throw fail("TUNSETVNETHDRSZ \(format.headerLength)", -rc) }
        if format == .udpTunnel {
            rc = fulcrum_tun_set_offload(
                fd, fulcrum_TUN_F_CSUM | fulcrum_TUN_F_TSO4 | fulcrum_TUN_F_TSO_ECN | fulcrum_TUN_F_UDP_TUNNEL_GSO)
            guard rc == 0 else { throw fail("TUNSETOFFLOAD with UDP-tunnel GSO (Linux 6.17 or later)", -rc) }
        } else {
            rc = fulcrum_tun_set_offload(fd, fulcrum_TUN_F_CSUM | fulcrum_TUN_F_TSO4 | fulcrum_TUN_F_TSO_ECN)
            guard rc == 0 else { throw fail("TUNSETOFFLOAD", -rc) }
        }
        let flags = fcntl(fd, F_GETFL)
        guard flags >= 0, fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0 else { throw fail("O_NONBLOCK", errno) }
        let deviceName = String(decoding: actual.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let socketFD = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard socketFD >= 0 else { throw fail("socket", errno) }
        defer { close(socketFD) }
        var m = [UInt8](repeating: 0, count: 6)
        rc = fulcrum_if_hwaddr(socketFD, deviceName, &m)
        guard rc == 0 else { throw fail("SIOCGIFHWADDR", -rc) }
        self.fd = fd
        self.format = format
        self.name = deviceName
        mac = MACAddress(m[0], m[1], m[2], m[3], m[4], m[5])
        // IPv6 off first (router solicitations would queue up unread); a host without IPv6 has no such file.
        _ = try? Self.writeSysctl("net/ipv6/conf/\(deviceName)/disable_ipv6", "1")
        try configureForwarding()
        try addPlaceholderAddress()
        rc = fulcrum_link_up(socketFD, deviceName)
        guard rc == 0 else { throw PacketIOError("set TAP \(deviceName) up", errno: -rc) }
    }

    /// Whether the calling thread's namespace filters reverse paths strictly (`net.ipv4.conf.all.rp_filter=1`),
    /// which drops every frame the TAP forwards (its source is our own address, reached through another device).
    public static func strictReversePathFilter() -> Bool {
        let fd = open("/proc/sys/net/ipv4/conf/all/rp_filter", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var byte: UInt8 = 0
        return read(fd, &byte, 1) == 1 && byte == UInt8(ascii: "1")
    }

    /// `placeholderAddress`/32 with scope host on the device (see the type's documentation).
    private func addPlaceholderAddress() throws(PacketIOError) {
        let index = if_nametoindex(name)
        guard index > 0 else { throw PacketIOError("if_nametoindex \(name)", errno: errno) }
        let nl = fulcrum_nl_open(1000)
        guard nl >= 0 else { throw PacketIOError("netlink socket for TAP \(name)", errno: -nl) }
        defer { close(nl) }
        let rc = fulcrum_nl_ipv4_address_scoped(
            nl, 1, Int32(index), Self.placeholderAddress.bigEndian, 32, fulcrum_RT_SCOPE_HOST, 1)
        guard rc == 0 || rc == -EEXIST else {
            throw PacketIOError("add 192.0.0.8/32 to TAP \(name) (for loose rp_filter)", errno: -rc)
        }
    }

    /// forwarding=1, accept_local=1, rp_filter=0 for this device only (see the type's documentation).
    private func configureForwarding() throws(PacketIOError) {
        for (setting, value) in [("forwarding", "1"), ("accept_local", "1"), ("rp_filter", "0")] {
            try Self.writeSysctl("net/ipv4/conf/\(name)/\(setting)", value)
        }
    }

    /// Writes `value` to /proc/sys/`key` (for the calling thread's network namespace).
    static func writeSysctl(_ key: String, _ value: String) throws(PacketIOError) {
        let path = "/proc/sys/\(key)"
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw PacketIOError("open \(path) (set \(value))", errno: errno) }
        defer { close(fd) }
        let written = value.withCString { write(fd, $0, strlen($0)) }
        guard written == value.utf8.count else { throw PacketIOError("write \(value) to \(path)", errno: errno) }
    }

    /// Writes one frame (header included); false when the kernel refused it (a malformed header, or ENOBUFS).
    @inline(__always)
    public func send(_ frame: UnsafeRawBufferPointer) -> Bool {
        write(fd, frame.baseAddress, frame.count) == frame.count
    }

    deinit {
        close(fd)
    }
}
