import FulcrumCore

/// A packet-plane virtual IP (`virtual_services:`): packets to `vip:port/protocol` are forwarded to a
/// backend of `pool` without terminating TCP.
public struct VirtualServiceConfig: Sendable, Equatable {
    public enum TransportProtocol: String, CaseIterable, Sendable {
        case tcp
        case udp
    }

    /// How packets reach the backend.
    public enum Forwarding: String, CaseIterable, Sendable {
        /// Full NAT: destination and source rewritten (needs `snat`); replies come back through Fulcrum.
        case nat
        /// Direct server return: L2 MAC rewrite on `interface`; the backend has the VIP on loopback.
        case dsr
        /// The packet is encapsulated to the backend (`encapsulation`), which answers the client directly.
        case tunnel
    }

    public enum Encapsulation: String, CaseIterable, Sendable {
        case ipip
        case vxlan
    }

    public var name: String?
    /// IPv4 only for now.
    public var vip: IPAddress
    public var port: UInt16
    public var `protocol`: TransportProtocol
    public var forwarding: Forwarding
    /// Set iff `forwarding` is `.tunnel`.
    public var encapsulation: Encapsulation?
    /// The interface packets leave by; required for DSR and tunnel.
    public var interface: String?
    public var pool: String
    /// Source NAT; set iff `forwarding` is `.nat`.
    public var snat: SNATConfig?
    /// VXLAN settings; set (defaults filled in) iff `encapsulation` is `.vxlan`.
    public var vxlan: VXLANConfig?
    /// Tunnel only: the outer packets' source address (`source_address`); nil means the first IPv4 address of
    /// `interface`, looked up when the service starts.
    public var sourceAddress: IPAddress?

    public init(
        name: String? = nil, vip: IPAddress, port: UInt16, protocol: TransportProtocol = .tcp,
        forwarding: Forwarding, encapsulation: Encapsulation? = nil, interface: String? = nil, pool: String,
        snat: SNATConfig? = nil, vxlan: VXLANConfig? = nil, sourceAddress: IPAddress? = nil
    ) {
        self.name = name
        self.vip = vip
        self.port = port
        self.protocol = `protocol`
        self.forwarding = forwarding
        self.encapsulation = encapsulation
        self.interface = interface
        self.pool = pool
        self.snat = snat
        self.vxlan = vxlan
        self.sourceAddress = sourceAddress
    }
}

/// Source NAT for `forwarding: nat` (`snat:`): connections to backends leave from `address` with a source
/// port taken from `ports`.
public struct SNATConfig: Sendable, Equatable {
    public var address: IPAddress
    /// YAML `"20000-60000"` (the default).
    public var ports: ClosedRange<UInt16>

    public init(address: IPAddress, ports: ClosedRange<UInt16> = 20000...60000) {
        self.address = address
        self.ports = ports
    }
}

/// VXLAN encapsulation settings (`vxlan:`).
public struct VXLANConfig: Sendable, Equatable {
    /// VXLAN network identifier, 1...16,777,215.
    public var vni: UInt32
    /// UDP destination port.
    public var port: UInt16
    /// Destination MAC of the inner Ethernet frame (`inner_mac`): the MAC every backend gives its vxlan
    /// device; the backend's kernel drops inner frames addressed to another MAC.
    public var innerMAC: [UInt8]

    /// The default `inner_mac`, 02:00:00:0a:a0:01 (locally administered).
    public static let defaultInnerMAC: [UInt8] = [0x02, 0x00, 0x00, 0x0a, 0xa0, 0x01]

    public init(vni: UInt32 = 42, port: UInt16 = 4789, innerMAC: [UInt8] = VXLANConfig.defaultInnerMAC) {
        self.vni = vni
        self.port = port
        self.innerMAC = innerMAC
    }
}
