/// The Active/Standby pair as the admin API (`GET /api/v1/ha`) and `/metrics` show it. `FulcrumServer` fills
/// it from its VRRP router and mirror; FulcrumAdmin knows nothing of either.
public struct HAStatus: Sendable, Equatable {
    /// `initialize`, `backup` or `master`.
    public var state: String
    public var virtualRouterId: Int
    public var interface: String
    /// The configured priority and the one advertised now (lowered by `track_weight` while tracking fails).
    public var configuredPriority: Int
    public var effectivePriority: Int
    /// Whether a tracked condition holds (a listener not bound, a referenced pool with no backend up).
    public var trackingFailing: Bool
    /// What makes tracking fail, one line each (empty when healthy).
    public var trackingReasons: [String]
    /// This node's advert source address.
    public var primaryAddress: String?
    /// The master as this node last saw it: itself while master, the sender of the adverts it obeys while
    /// backup; nil before any was seen.
    public var masterAddress: String?
    public var virtualAddresses: [String]
    public var transitions: Int
    public var advertsSent: UInt64
    public var advertsReceived: UInt64
    /// Received adverts dropped, by reason (`wrong_ttl`, `bad_checksum`, ...).
    public var drops: [(reason: String, count: UInt64)]
    public var systemErrors: UInt64
    /// Mirroring counters, when `ha.mirror` is configured.
    public var mirror: [(name: String, value: UInt64)]

    public init(
        state: String, virtualRouterId: Int, interface: String, configuredPriority: Int, effectivePriority: Int,
        trackingFailing: Bool, trackingReasons: [String], primaryAddress: String?, masterAddress: String?,
        virtualAddresses: [String], transitions: Int, advertsSent: UInt64, advertsReceived: UInt64,
        drops: [(reason: String, count: UInt64)], systemErrors: UInt64, mirror: [(name: String, value: UInt64)] = []
    ) {
        self.state = state
        self.virtualRouterId = virtualRouterId
        self.interface = interface
        self.configuredPriority = configuredPriority
        self.effectivePriority = effectivePriority
        self.trackingFailing = trackingFailing
        self.trackingReasons = trackingReasons
        self.primaryAddress = primaryAddress
        self.masterAddress = masterAddress
        self.virtualAddresses = virtualAddresses
        self.transitions = transitions
        self.advertsSent = advertsSent
        self.advertsReceived = advertsReceived
        self.drops = drops
        self.systemErrors = systemErrors
        self.mirror = mirror
    }

    public static func == (a: HAStatus, b: HAStatus) -> Bool {
        a.state == b.state && a.virtualRouterId == b.virtualRouterId && a.interface == b.interface
            && a.configuredPriority == b.configuredPriority && a.effectivePriority == b.effectivePriority
            && a.trackingFailing == b.trackingFailing && a.trackingReasons == b.trackingReasons
            && a.primaryAddress == b.primaryAddress && a.masterAddress == b.masterAddress
            && a.virtualAddresses == b.virtualAddresses && a.transitions == b.transitions
            && a.advertsSent == b.advertsSent && a.advertsReceived == b.advertsReceived
            && a.drops.map(\.reason) == b.drops.map(\.reason) && a.drops.map(\.count) == b.drops.map(\.count)
            && a.systemErrors == b.systemErrors && a.mirror.map(\.name) == b.mirror.map(\.name)
            && a.mirror.map(\.value) == b.mirror.map(\.value)
    }

    var json: JSONValue {
        func optional(_ text: String?) -> JSONValue { text.map { .string($0) } ?? .null }
        return .object([
            ("state", .string(state)),
            ("virtual_router_id", .int(virtualRouterId)),
            ("interface", .string(interface)),
            ("priority", .int(configuredPriority)),
            ("effective_priority", .int(effectivePriority)),
            ("tracking_failing", .bool(trackingFailing)),
            ("tracking_reasons", .array(trackingReasons.map { .string($0) })),
            ("primary_address", optional(primaryAddress)),
            ("master_address", optional(masterAddress)),
            ("vips", .array(virtualAddresses.map { .string($0) })),
            ("transitions", .int(transitions)),
            ("adverts_sent", .int(Int(clamping: advertsSent))),
            ("adverts_received", .int(Int(clamping: advertsReceived))),
            ("adverts_dropped", .object(drops.map { ($0.reason, .int(Int(clamping: $0.count))) })),
            ("system_errors", .int(Int(clamping: systemErrors))),
            ("mirror", .object(mirror.map { ($0.name, .int(Int(clamping: $0.value))) })),
        ])
    }

    /// The `fulcrum_vrrp_*` and `fulcrum_mirror_*` series, rendered at scrape time like the backend series.
    var exposition: String {
        var out = MetricsExposition.Exposition()
        let id = ["vrid": String(virtualRouterId)]
        out.family("fulcrum_vrrp_state", "gauge", "1 for the state this VRRP router is in.")
        for name in ["initialize", "backup", "master"] {
            out.sample("fulcrum_vrrp_state", id.merging(["state": name]) { a, _ in a }, state == name ? 1 : 0)
        }
        out.family("fulcrum_vrrp_priority", "gauge", "Priority advertised now (after tracking).")
        out.sample("fulcrum_vrrp_priority", id, Double(effectivePriority))
        out.family("fulcrum_vrrp_tracking_failing", "gauge", "1 while a tracked condition lowers the priority.")
        out.sample("fulcrum_vrrp_tracking_failing", id, trackingFailing ? 1 : 0)
        out.family("fulcrum_vrrp_transitions_total", "counter", "State changes.")
        out.sample("fulcrum_vrrp_transitions_total", id, Double(transitions))
        out.family("fulcrum_vrrp_adverts_sent_total", "counter", "Adverts sent.")
        out.sample("fulcrum_vrrp_adverts_sent_total", id, Double(advertsSent))
        out.family("fulcrum_vrrp_adverts_received_total", "counter", "Valid adverts received.")
        out.sample("fulcrum_vrrp_adverts_received_total", id, Double(advertsReceived))
        out.family("fulcrum_vrrp_adverts_dropped_total", "counter", "Received adverts that failed a check.")
        for drop in drops {
            out.sample(
                "fulcrum_vrrp_adverts_dropped_total", id.merging(["reason": drop.reason]) { a, _ in a },
                Double(drop.count))
        }
        out.family("fulcrum_vrrp_system_errors_total", "counter", "Failed sends, address changes, announcements.")
        out.sample("fulcrum_vrrp_system_errors_total", id, Double(systemErrors))
        for (name, value) in mirror {
            out.family("fulcrum_mirror_\(name)", name.hasSuffix("_total") ? "counter" : "gauge", "State mirroring.")
            out.sample("fulcrum_mirror_\(name)", [:], Double(value))
        }
        return out.text
    }
}
