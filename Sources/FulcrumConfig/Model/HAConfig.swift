import FulcrumCore

/// Active/Standby pair settings (`ha:`): VRRPv3 election and state mirroring to the peer.
public struct HAConfig: Sendable, Equatable {
    public var vrrp: VRRPConfig?
    public var mirror: MirrorConfig?

    public init(vrrp: VRRPConfig? = nil, mirror: MirrorConfig? = nil) {
        self.vrrp = vrrp
        self.mirror = mirror
    }
}

/// VRRPv3 (RFC 5798) for IPv4 (`ha.vrrp:`): the master holds `vips` on `interface`.
public struct VRRPConfig: Sendable, Equatable {
    public var interface: String
    /// VRID, 1...255; both nodes of a pair use the same.
    public var virtualRouterId: Int
    /// 1...255; the higher wins.
    public var priority: Int
    /// 10ms...40.95s in steps of 10ms (VRRPv3 counts centiseconds).
    public var advertInterval: Duration
    /// At least one; IPv4.
    public var vips: [CIDR]
    /// Whether a higher-priority backup takes over from a live master.
    public var preempt: Bool
    public var preemptDelay: Duration
    /// Send adverts to these peers by unicast instead of multicast (clouds without multicast).
    public var unicastPeers: [IPAddress]
    /// Priority lost while a tracked condition (no healthy backend) holds, 0...254.
    public var trackWeight: Int
    /// A command run on each state change, with the new state as its argument.
    public var notify: String?

    public init(
        interface: String, virtualRouterId: Int, priority: Int = 100, advertInterval: Duration = .seconds(1),
        vips: [CIDR], preempt: Bool = true, preemptDelay: Duration = .zero, unicastPeers: [IPAddress] = [],
        trackWeight: Int = 50, notify: String? = nil
    ) {
        self.interface = interface
        self.virtualRouterId = virtualRouterId
        self.priority = priority
        self.advertInterval = advertInterval
        self.vips = vips
        self.preempt = preempt
        self.preemptDelay = preemptDelay
        self.unicastPeers = unicastPeers
        self.trackWeight = trackWeight
        self.notify = notify
    }
}

/// Mirroring of the flow and affinity tables to the standby (`ha.mirror:`), authenticated with a shared key.
public struct MirrorConfig: Sendable, Equatable {
    public var listen: Endpoint
    public var peers: [Endpoint]
    /// Path of the file holding the shared key.
    public var keyFile: String

    public init(listen: Endpoint, peers: [Endpoint], keyFile: String) {
        self.listen = listen
        self.peers = peers
        self.keyFile = keyFile
    }
}
