import FulcrumCore
import Prometheus

/// What the admin API can read and change in a running balancer. `FulcrumServer` implements it;
/// the API, `/metrics` and `/ui` only talk to this protocol, so they never depend on the server.
public protocol AdminControl: Sendable {
    /// Every pool, in config order.
    func pools() async -> [Pool]
    func pool(named name: String) async -> Pool?
    /// Every proxy listener with its counters.
    func listeners() async -> [ListenerStatus]
    /// Every packet-plane virtual service with its counters (`VirtualServiceStatus.swift`).
    func virtualServices() async -> [VirtualServiceStatus]
    /// Whether runtime changes are written to a state file (and so survive a restart or reload).
    var persistsChanges: Bool { get async }

    /// Scale-out: adds a backend. With active checks it gets traffic once healthy, unless `healthy` is true.
    func addBackend(pool: String, spec: BackendSpec, healthy: Bool?) async throws(AdminError) -> ChangeResult
    /// Scale-in: drains the backend (no new connections) until its connections end or `drainTimeout`
    /// passes, then removes it; with `force` it is removed at once and its connections are closed.
    func removeBackend(
        pool: String, endpoint: Endpoint, force: Bool, drainTimeout: Duration
    ) async throws(AdminError)
        -> ChangeResult
    func setWeight(pool: String, endpoint: Endpoint, weight: Int) async throws(AdminError) -> ChangeResult
    /// `enabled`, `draining` or `disabled`.
    func setAdminState(pool: String, endpoint: Endpoint, state: AdminState) async throws(AdminError) -> ChangeResult
    /// The registry the process bootstrapped swift-metrics with; `/metrics` appends what it holds
    /// (control-plane counters) to the per-backend series. Nil when metrics were not bootstrapped.
    var metricsRegistry: PrometheusCollectorRegistry? { get async }
    /// The cluster as this node sees it (`GET /api/v1/cluster`); nil when the node is not clustered.
    func cluster() async -> ClusterView?
    /// The Active/Standby pair's state (`GET /api/v1/ha`, `fulcrum_vrrp_*`); nil without `ha.vrrp`.
    var haStatus: HAStatus? { get async }
}

extension AdminControl {
    public var metricsRegistry: PrometheusCollectorRegistry? { nil }
    public func cluster() async -> ClusterView? { nil }
    public var haStatus: HAStatus? { nil }
}

/// A proxy listener as the admin API and metrics show it.
public struct ListenerStatus: Sendable, Equatable {
    public var name: String
    /// `ip:port` actually bound.
    public var bind: String
    /// `tcp` or `http`.
    public var mode: String
    public var pool: String
    public var acceptedConnections: UInt64
    public var activeConnections: Int

    public init(
        name: String, bind: String, mode: String, pool: String, acceptedConnections: UInt64, activeConnections: Int
    ) {
        self.name = name
        self.bind = bind
        self.mode = mode
        self.pool = pool
        self.acceptedConnections = acceptedConnections
        self.activeConnections = activeConnections
    }
}

/// What a change did, for the API's answer.
public struct ChangeResult: Sendable, Equatable {
    /// True when the change was written to the state file; false means it is lost on restart.
    public var persisted: Bool
    /// The events the change caused (backend added, draining, removed...).
    public var events: [PoolEvent]

    public init(persisted: Bool, events: [PoolEvent]) {
        self.persisted = persisted
        self.events = events
    }
}

/// Why a change was refused; each maps to one HTTP status.
public enum AdminError: Error, Sendable, Equatable, CustomStringConvertible {
    /// 404
    case unknownPool(String)
    /// 404
    case unknownBackend(pool: String, Endpoint)
    /// 409
    case duplicateBackend(pool: String, Endpoint)
    /// 422
    case invalidWeight(Int)
    /// 500: the change was applied but the state file could not be written.
    case persistenceFailed(String)
    /// 409: a clustered write kept losing its compare-and-swap (someone else changed the pool meanwhile).
    case conflict(String)
    /// 503: the shared store (etcd) cannot be reached; nothing was changed.
    case storeUnavailable(String)
    /// 422: the shared store refused the change (every node would reject the resulting document).
    case rejected(String)

    public var description: String {
        switch self {
        case .unknownPool(let pool): return "no pool '\(pool)'"
        case .unknownBackend(let pool, let endpoint): return "no backend \(endpoint) in pool '\(pool)'"
        case .duplicateBackend(let pool, let endpoint): return "backend \(endpoint) is already in pool '\(pool)'"
        case .invalidWeight(let weight):
            return
                "weight \(weight) is out of range \(BackendSpec.weightRange.lowerBound)-\(BackendSpec.weightRange.upperBound)"
        case .persistenceFailed(let reason): return "applied, but the state file could not be written: \(reason)"
        case .conflict(let detail): return "conflicting concurrent change, not applied: \(detail)"
        case .storeUnavailable(let detail): return "the shared configuration store is unavailable: \(detail)"
        case .rejected(let detail): return "the shared configuration store refused the change: \(detail)"
        }
    }
}

/// The cluster as one node sees it: the live nodes (from their lease-bound records) and this node's store.
public struct ClusterView: Sendable, Equatable {
    /// One live node's record.
    public struct Node: Sendable, Equatable {
        public var id: String
        public var adminAddress: String?
        public var configRevision: Int64
        public var health: String
        public var storeConnected: Bool

        public init(id: String, adminAddress: String?, configRevision: Int64, health: String, storeConnected: Bool) {
            self.id = id
            self.adminAddress = adminAddress
            self.configRevision = configRevision
            self.health = health
            self.storeConnected = storeConnected
        }
    }

    /// A shared document this node refuses to apply, with its problems (one line each).
    public struct Rejection: Sendable, Equatable {
        public var key: String
        public var modRevision: Int64
        public var problems: [String]

        public init(key: String, modRevision: Int64, problems: [String]) {
            self.key = key
            self.modRevision = modRevision
            self.problems = problems
        }
    }

    /// This node's id.
    public var node: String
    /// `etcd` (or `file`).
    public var store: String
    public var prefix: String
    public var connected: Bool
    /// The newest store revision this node processed, and the one its running config was built from.
    public var revision: Int64
    public var appliedRevision: Int64
    public var lastError: String?
    public var rejections: [Rejection]
    public var rejectedTotal: Int
    public var disconnectsTotal: Int
    /// Admin writes that lost a compare-and-swap race on this node and were retried.
    public var writeConflicts: Int
    /// Whether this node's own record is registered under a live lease.
    public var registered: Bool
    /// Live nodes, sorted by id; empty with `nodesError` set when etcd cannot be read now.
    public var nodes: [Node]
    public var nodesError: String?

    public init(
        node: String, store: String, prefix: String, connected: Bool, revision: Int64, appliedRevision: Int64,
        lastError: String?, rejections: [Rejection], rejectedTotal: Int, disconnectsTotal: Int, writeConflicts: Int,
        registered: Bool,
        nodes: [Node], nodesError: String?
    ) {
        self.node = node
        self.store = store
        self.prefix = prefix
        self.connected = connected
        self.revision = revision
        self.appliedRevision = appliedRevision
        self.lastError = lastError
        self.rejections = rejections
        self.rejectedTotal = rejectedTotal
        self.disconnectsTotal = disconnectsTotal
        self.writeConflicts = writeConflicts
        self.registered = registered
        self.nodes = nodes
        self.nodesError = nodesError
    }
}
