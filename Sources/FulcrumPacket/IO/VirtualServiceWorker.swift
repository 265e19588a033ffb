import CFulcrumLinux
import FulcrumCore

#if canImport(Glibc)
import Glibc
#endif

/// What every running virtual service (NAT, DSR, tunnel) offers the control plane: start, stop, the pool it
/// forwards to and its counters, so the server, `/metrics` and the admin API treat the modes alike.
public protocol VirtualServiceWorker: AnyObject, Sendable {
    var pool: Pool { get }
    /// Starts the worker thread.
    func start() throws(PacketIOError)
    /// Stops the worker (within one poll interval, 100 ms) and waits for it.
    func stop()
    /// The counters the worker published after its last batch.
    var counters: VirtualServiceCounters { get }
    /// HA mirroring of the worker's flow table (`FlowMirrorPort`).
    var mirror: FlowMirrorPort { get }
}

/// The counters of one virtual service, the same shape for every mode.
public struct VirtualServiceCounters: Sendable, Equatable {
    public var forwarding = ForwardingCounters()
    public var drops = DropCounters()
    public var flows = FlowCounters()
    public var activeFlows = 0
    /// Packets the kernel refused to send (ENOBUFS, EMSGSIZE).
    public var sendFailures: UInt64 = 0

    public init() {}
}

extension NATVirtualService: VirtualServiceWorker {
    public var counters: VirtualServiceCounters {
        let s = statistics
        var c = VirtualServiceCounters()
        c.forwarding = s.forwarding
        c.drops = s.drops
        c.flows = s.flows
        c.activeFlows = s.activeFlows
        return c
    }
}

extension DSRVirtualService: VirtualServiceWorker {
    public var counters: VirtualServiceCounters {
        let s = statistics
        var c = VirtualServiceCounters()
        c.forwarding = s.forwarding
        c.drops = s.drops
        c.flows = s.flows
        c.activeFlows = s.activeFlows
        c.sendFailures = s.sendFailures
        return c
    }
}

extension TunnelVirtualService: VirtualServiceWorker {
    public var counters: VirtualServiceCounters {
        let s = statistics
        var c = VirtualServiceCounters()
        c.forwarding = s.forwarding
        c.drops = s.drops
        c.flows = s.flows
        c.activeFlows = s.activeFlows
        c.sendFailures = s.sendFailures
        return c
    }
}

/// Interface lookups the server needs to build a virtual service.
public enum InterfaceAddress {
    /// The first IPv4 address of `interface` (host order), or nil when it has none.
    public static func firstIPv4(of interface: String) -> UInt32? {
        allIPv4().first { $0.interface == interface }?.address
    }

    /// Every IPv4 address of this host's interfaces (host order), in the kernel's order.
    public static func allIPv4() -> [(interface: String, address: UInt32)] {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0, let first = list else { return [] }
        defer { freeifaddrs(list) }
        var found: [(interface: String, address: UInt32)] = []
        var cursor: UnsafeMutablePointer<ifaddrs>? = first
        while let entry = cursor {
            defer { cursor = entry.pointee.ifa_next }
            guard let address = entry.pointee.ifa_addr, address.pointee.sa_family == sa_family_t(AF_INET) else {
                continue
            }
            let v4 = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr.s_addr }
            found.append((String(cString: entry.pointee.ifa_name), UInt32(bigEndian: v4)))
        }
        return found
    }
}
