/// Where the configuration is shared in a cluster of active nodes (`cluster:`).
public struct ClusterConfig: Sendable, Equatable {
    public enum Store: String, CaseIterable, Sendable {
        /// This file only: the default, a single node or a pair.
        case file
        /// etcd v3 at `endpoints`, under `prefix`.
        case etcd
    }

    public var store: Store
    /// etcd only: `http://host:port` URLs, at least one.
    public var endpoints: [String]
    /// Key prefix; starts and ends with `/` (default `/fulcrum/`).
    public var prefix: String
    /// This node's name in the cluster (default: the host name).
    public var nodeName: String?

    public init(store: Store = .file, endpoints: [String] = [], prefix: String = "/fulcrum/", nodeName: String? = nil) {
        self.store = store
        self.endpoints = endpoints
        self.prefix = prefix
        self.nodeName = nodeName
    }
}
