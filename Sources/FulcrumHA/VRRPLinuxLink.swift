import CFulcrumLinux
import FulcrumCore
import FulcrumPacket
import Glibc

/// A failed system call while setting up or using the VRRP link.
public struct VRRPSystemError: Error, CustomStringConvertible, Sendable {
    public var operation: String
    public var errno: Int32

    public var description: String { "\(operation): \(String(cString: strerror(errno))) (errno \(errno))" }
}

/// The kernel side of one virtual router, owned by the service's thread: a raw protocol-112 socket for
/// adverts, rtnetlink for the virtual addresses, AF_PACKET for gratuitous ARP.
///
/// Adverts are sent with IP_HDRINCL and a header we build: the source must be the primary address (the
/// checksum covers it and peers break ties with it), and binding a raw socket to it instead would also
/// filter out received multicast. Not Sendable: one thread uses it.
final class VRRPLinuxLink {
    let interface: String
    let interfaceIndex: Int32
    let primaryAddress: IPAddress
    private let vrrpSocket: Int32
    private let netlinkSocket: Int32
    private let arpSocket: Int32
    private let mac: MACAddress
    private var netlinkSequence: UInt32 = 1

    /// Opens every socket in the calling thread's network namespace.
    init(
        interface: String, primaryAddress configured: IPAddress?, excluding virtual: Set<IPAddress>, multicast: Bool
    )
        throws
    {
        self.interface = interface
        let index = Int32(bitPattern: if_nametoindex(interface))
        guard index > 0 else { throw VRRPSystemError(operation: "if_nametoindex(\(interface))", errno: ENODEV) }
        interfaceIndex = index
        guard let primary = configured ?? Self.firstIPv4Address(of: interface, excluding: virtual) else {
            throw VRRPSystemError(
                operation: "no IPv4 address on \(interface) to send adverts from", errno: EADDRNOTAVAIL)
        }
        primaryAddress = primary

        var opened: [Int32] = []
        func check(_ result: Int32, _ operation: String) throws {
            if result < 0 {
                let code = errno
                for fd in opened { close(fd) }
                throw VRRPSystemError(operation: operation, errno: code)
            }
        }
        let raw = socket(
            AF_INET, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), Int32(FulcrumHA.vrrpProtocol))
        try check(raw, "socket(AF_INET, SOCK_RAW, 112)")
        opened.append(raw)
        try check(Self.setOption(raw, Int32(IPPROTO_IP), IP_HDRINCL, 1), "IP_HDRINCL")
        try check(
            Self.setOption(raw, Int32(IPPROTO_IP), IP_MULTICAST_TTL, Int32(FulcrumHA.vrrpTTL)), "IP_MULTICAST_TTL")
        try check(Self.setOption(raw, Int32(IPPROTO_IP), IP_MULTICAST_LOOP, 0), "IP_MULTICAST_LOOP")
        // Only the groups this socket joined, not every group any socket on the host joined.
        try check(Self.setOption(raw, Int32(IPPROTO_IP), 49 /* IP_MULTICAST_ALL */, 0), "IP_MULTICAST_ALL")
        try check(
            interface.withCString { name in
                setsockopt(raw, SOL_SOCKET, SO_BINDTODEVICE, name, socklen_t(strlen(name) + 1))
            }, "SO_BINDTODEVICE(\(interface))")
        try check(fulcrum_ipv4_multicast_interface(raw, index) < 0 ? -1 : 0, "IP_MULTICAST_IF")
        if multicast, case .v4(let group) = FulcrumHA.vrrpMulticastGroup {
            let rc = fulcrum_ipv4_multicast_membership(raw, 1, group.bigEndian, index)
            if rc < 0 { errno = -rc }
            try check(rc, "IP_ADD_MEMBERSHIP 224.0.0.18 on \(interface)")
        }
        _ = fcntl(raw, F_SETFL, fcntl(raw, F_GETFL) | O_NONBLOCK)
        vrrpSocket = raw

        let nl = fulcrum_nl_open(1000)
        if nl < 0 { errno = -nl }
        try check(nl, "netlink socket")
        opened.append(nl)
        netlinkSocket = nl

        let arp = socket(
            AF_PACKET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), Int32(UInt16(0x0806).bigEndian))
        try check(arp, "socket(AF_PACKET, SOCK_DGRAM, ETH_P_ARP)")
        opened.append(arp)
        arpSocket = arp

        var hw = [UInt8](repeating: 0, count: 6)
        let rc = interface.withCString { fulcrum_if_hwaddr(raw, $0, &hw) }
        if rc < 0 { errno = -rc }
        try check(rc, "SIOCGIFHWADDR(\(interface))")
        mac = MACAddress(hw[0], hw[1], hw[2], hw[3], hw[4], hw[5])
    }

    deinit {
        close(vrrpSocket)
        close(netlinkSocket)
        close(arpSocket)
    }

    /// The descriptor to poll for received adverts.
    var receiveDescriptor: Int32 { vrrpSocket }

    /// Sends one whole IPv4 packet (header included) to `destination`.
    func send(packet: [UInt8], to destination: IPAddress) -> Int32? {
        guard case .v4(let value) = destination else { return EAFNOSUPPORT }
        var to = sockaddr_in()
        to.sin_family = sa_family_t(AF_INET)
        to.sin_addr.s_addr = value.bigEndian
        let sent = packet.withUnsafeBytes { bytes in
            withUnsafePointer(to: &to) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(vrrpSocket, bytes.baseAddress, bytes.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        }
        return sent < 0 ? errno : nil
    }

    /// Reads one queued packet without blocking; nil when none is queued.
    func receive(into buffer: inout [UInt8]) -> Int? {
        let count = buffer.withUnsafeMutableBytes { recv(vrrpSocket, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
        return count < 0 ? nil : count
    }

    /// Adds or removes an address; an address already there (add) or already gone (remove) is success.
    func setAddress(_ vip: VRRPVirtualAddress, present: Bool) -> Int32? {
        guard case .v4(let value) = vip.address else { return EAFNOSUPPORT }
        netlinkSequence &+= 1
        let rc = fulcrum_nl_ipv4_address(
            netlinkSocket, present ? 1 : 0, interfaceIndex, value.bigEndian, UInt8(vip.prefixLength), netlinkSequence)
        if rc == 0 || (present && rc == -EEXIST) || (!present && rc == -EADDRNOTAVAIL) { return nil }
        return -rc
    }

    /// Broadcasts an ARP announcement for `address` (RFC 5227 §2.3: a request with sender and target IP both
    /// the address), so neighbours and switches learn that it moved to our MAC.
    func announce(_ address: IPAddress) -> Int32? {
        guard case .v4(let ip) = address else { return EAFNOSUPPORT }
        // The socket is SOCK_DGRAM (the kernel writes the Ethernet header): send the frame's ARP payload.
        let payload = ARP.gratuitous(ip: ip, mac: mac)[Ethernet.headerLength...]
        let rc = payload.withUnsafeBytes {
            fulcrum_packet_send_broadcast(
                arpSocket, interfaceIndex, Ethernet.typeARP, $0.baseAddress, $0.count)
        }
        return rc < 0 ? -rc : nil
    }

    private static func setOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32) -> Int32 {
        var v = value
        return setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size))
    }

    /// The interface's first IPv4 address that is not a virtual one.
    static func firstIPv4Address(of interface: String, excluding virtual: Set<IPAddress>) -> IPAddress? {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0, let first = list else { return nil }
        defer { freeifaddrs(first) }
        var node: UnsafeMutablePointer<ifaddrs>? = first
        var found: IPAddress?
        var steps = 0
        while let current = node, steps < 100_000 {
            steps += 1
            node = current.pointee.ifa_next
            guard let sa = current.pointee.ifa_addr, sa.pointee.sa_family == sa_family_t(AF_INET),
                String(cString: current.pointee.ifa_name) == interface
            else { continue }
            let value = sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
                UInt32(bigEndian: $0.pointee.sin_addr.s_addr)
            }
            let address = IPAddress.v4(value)
            if !virtual.contains(address) {
                found = address
                break
            }
        }
        return found
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the time the state machine runs on.
func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}
