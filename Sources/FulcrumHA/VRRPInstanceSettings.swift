import FulcrumCore

/// An address the master holds on the interface, with its prefix (`192.0.2.10/24`).
public struct VRRPVirtualAddress: Sendable, Hashable, CustomStringConvertible {
    public var address: IPAddress
    public var prefixLength: Int
    /// Whether the master puts this address on the interface. False for an address the packet plane serves
    /// itself (a `dsr` VIP must stay off the kernel): then only the announcements and `onTransition` move it.
    public var onKernel: Bool

    public init(address: IPAddress, prefixLength: Int = 32, onKernel: Bool = true) {
        self.address = address
        self.prefixLength = prefixLength
        self.onKernel = onKernel
    }

    public var description: String { "\(address)/\(prefixLength)" }
}

/// Everything a `VRRPService` needs to run one virtual router; the composition root maps `ha.vrrp` to it.
public struct VRRPInstanceSettings: Sendable {
    /// Why settings cannot run.
    public enum Invalid: Error, Equatable, Sendable, CustomStringConvertible {
        case advertInterval(Duration)
        case virtualAddress(VRRPVirtualAddress)
        case machine(VRRPStateMachine.InvalidSetting)
        case advert(VRRPAdvertisement.InvalidField)

        public var description: String {
            switch self {
            case .advertInterval(let d): "advert interval \(d) is not 10ms...40.95s"
            case .virtualAddress(let a): "virtual address \(a) is not IPv4 with a prefix of 1...32"
            case .machine(let m): "invalid VRRP setting \(m)"
            case .advert(let a): "invalid VRRP advert field \(a)"
            }
        }
    }

    public var interface: String
    public var virtualRouterId: Int
    public var priority: Int
    /// 10 ms ... 40.95 s; rounded to centiseconds.
    public var advertInterval: Duration
    public var virtualAddresses: [VRRPVirtualAddress]
    public var preempt: Bool
    public var preemptDelay: Duration
    /// Send adverts to these addresses instead of 224.0.0.18 (keepalived's `unicast_peer`).
    public var unicastPeers: [IPAddress]
    /// Priority lost while tracking fails; 50 by default, as `ha.vrrp.track_weight` documents.
    public var trackWeight: Int
    /// Whether the master puts any address on the interface (see `VRRPVirtualAddress.onKernel`); setting it
    /// sets every address's `onKernel`.
    public var managesAddresses: Bool {
        get { virtualAddresses.contains { $0.onKernel } }
        set {
            for i in virtualAddresses.indices { virtualAddresses[i].onKernel = newValue }
        }
    }

    /// The addresses the master puts on the interface.
    public var kernelAddresses: [VRRPVirtualAddress] { virtualAddresses.filter(\.onKernel) }
    /// Gratuitous ARPs sent per virtual address on becoming master (keepalived's garp_master_repeat is 5).
    public var gratuitousARPRepeat: Int
    /// Re-announce the addresses this often while master; nil: only on becoming master.
    public var gratuitousARPRefresh: Duration?
    /// This node's address on the interface (advert source, tie-breaker); nil: its first IPv4 address that is
    /// not a virtual one.
    public var primaryAddress: IPAddress?
    /// A command run on each state change with the new state (`master`, `backup`, `initialize`) appended.
    public var notify: String?
    /// How long a notify command may run before it is killed.
    public var notifyTimeout: Duration
    /// Run in the network namespace at this path (`/var/run/netns/NAME`); nil: the process's own.
    public var networkNamespacePath: String?

    public init(
        interface: String, virtualRouterId: Int, priority: Int = 100, advertInterval: Duration = .seconds(1),
        virtualAddresses: [VRRPVirtualAddress], preempt: Bool = true, preemptDelay: Duration = .zero,
        unicastPeers: [IPAddress] = [], trackWeight: Int = 50, managesAddresses: Bool = true,
        gratuitousARPRepeat: Int = 5,
        gratuitousARPRefresh: Duration? = nil, primaryAddress: IPAddress? = nil, notify: String? = nil,
        notifyTimeout: Duration = .seconds(10), networkNamespacePath: String? = nil
    ) {
        self.interface = interface
        self.virtualRouterId = virtualRouterId
        self.priority = priority
        self.advertInterval = advertInterval
        self.virtualAddresses = virtualAddresses
        self.preempt = preempt
        self.preemptDelay = preemptDelay
        self.unicastPeers = unicastPeers
        self.trackWeight = trackWeight
        self.gratuitousARPRepeat = gratuitousARPRepeat
        self.gratuitousARPRefresh = gratuitousARPRefresh
        self.primaryAddress = primaryAddress
        self.notify = notify
        self.notifyTimeout = notifyTimeout
        self.networkNamespacePath = networkNamespacePath
        if !managesAddresses { self.managesAddresses = false }
    }

    /// The advert interval in centiseconds, rounded to the nearest.
    public var advertIntervalCentiseconds: Int {
        let (seconds, attoseconds) = advertInterval.components
        let centiseconds = (Double(seconds) * 100 + Double(attoseconds) / 1e16).rounded()
        return centiseconds >= 0 && centiseconds < 1e6 ? Int(centiseconds) : -1
    }

    /// Checks everything that does not need the system (the service does this before opening any socket).
    public func validate() throws(Invalid) {
        _ = try makeMachineSettings(primaryAddress: primaryAddress ?? .v4(0))
        _ = try makeAdvert()
    }

    /// Checks everything that does not need the system, and builds the pure parts.
    func makeMachineSettings(primaryAddress: IPAddress) throws(Invalid) -> VRRPStateMachine.Settings {
        let centiseconds = advertIntervalCentiseconds
        guard (1...Int(VRRPAdvertisement.maxIntervalCentiseconds)).contains(centiseconds) else {
            throw .advertInterval(advertInterval)
        }
        for vip in virtualAddresses where !vip.address.isIPv4 || !(1...32).contains(vip.prefixLength) {
            throw .virtualAddress(vip)
        }
        do {
            return try VRRPStateMachine.Settings(
                priority: priority, advertInterval: centiseconds, primaryAddress: primaryAddress, preempt: preempt,
                preemptDelay: preemptDelay, trackWeight: trackWeight)
        } catch {
            throw .machine(error)
        }
    }

    func makeAdvert() throws(Invalid) -> VRRPAdvertisement {
        do {
            return try VRRPAdvertisement(
                virtualRouterId: virtualRouterId, priority: priority, maxAdvertInterval: advertIntervalCentiseconds,
                addresses: virtualAddresses.map(\.address))
        } catch {
            throw .advert(error)
        }
    }
}
