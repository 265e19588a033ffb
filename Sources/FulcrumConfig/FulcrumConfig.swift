import FulcrumCore

/// A validated Fulcrum configuration: the model `fulcrum run` serves and `fulcrum validate` checks.
///
/// Made by `ConfigLoader.load(yaml:)`; every cross-reference in it (a listener's pool, a virtual
/// service's pool) has been checked to resolve.
public struct FulcrumConfig: Sendable, Equatable {
    /// The admin API (`admin:`); nil when the section is absent, which disables the API.
    public var admin: AdminConfig?
    /// Backend pools in file order (`pools:`), each named by its mapping key.
    public var pools: [PoolConfig]
    /// Proxy listeners, L4 TCP or L7 HTTP (`listeners:`).
    public var listeners: [ListenerConfig]
    /// Packet-plane virtual IPs (`virtual_services:`).
    public var virtualServices: [VirtualServiceConfig]
    /// Active/Standby pair settings (`ha:`).
    public var ha: HAConfig?
    /// Shared configuration store (`cluster:`).
    public var cluster: ClusterConfig?
    /// Event-loop threads; nil means one per core.
    public var workers: Int?
    /// The access log (`access_log:`); nil (the default) writes none.
    public var accessLog: AccessLogConfig?

    public init(
        admin: AdminConfig? = nil, pools: [PoolConfig] = [], listeners: [ListenerConfig] = [],
        virtualServices: [VirtualServiceConfig] = [], ha: HAConfig? = nil, cluster: ClusterConfig? = nil,
        workers: Int? = nil, accessLog: AccessLogConfig? = nil
    ) {
        self.admin = admin
        self.pools = pools
        self.listeners = listeners
        self.virtualServices = virtualServices
        self.ha = ha
        self.cluster = cluster
        self.workers = workers
        self.accessLog = accessLog
    }

    /// The pool called `name`, if any.
    public func pool(named name: String) -> PoolConfig? {
        pools.first { $0.name == name }
    }
}
