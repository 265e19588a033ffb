import FulcrumConfig
import ServiceLifecycle

/// Where a node's configuration comes from: the YAML file (``FileConfigStore``, the default) or etcd
/// (``EtcdConfigStore``, shared by a cluster). A store keeps the last good configuration; a document that
/// does not validate is rejected and reported in ``status``, never applied.
///
/// `run()` (it is a `Service`) keeps the store current: the etcd store watches, the file store has nothing
/// to do until ``reload()``.
public protocol ConfigStore: Service {
    /// The last good configuration; nil until a load succeeded.
    var current: ConfigSnapshot? { get }
    /// Connection, revision and problems, for logs, metrics and the admin API.
    var status: ConfigStoreStatus { get }
    /// Every new configuration, starting with the current one (if any). A slow reader skips to the newest:
    /// intermediate snapshots are dropped, never reordered.
    func snapshots() -> AsyncStream<ConfigSnapshot>
    /// Reads the source again now (file: the file; etcd: the whole prefix) and returns the resulting last
    /// good snapshot. Throws when the source cannot be read, or when the file does not validate.
    @discardableResult func reload() async throws -> ConfigSnapshot
}

/// One validated configuration and the source revision it was built at.
public struct ConfigSnapshot: Sendable, Equatable {
    public var config: FulcrumConfig
    /// etcd: the store revision the node had caught up to when this was built. File: 1, 2, … per load.
    public var revision: Int64

    public init(config: FulcrumConfig, revision: Int64) {
        self.config = config
        self.revision = revision
    }
}

/// What a store says about itself.
public struct ConfigStoreStatus: Sendable, Equatable {
    public var store: ClusterConfig.Store
    /// etcd: the watch is established. File: always true.
    public var connected: Bool
    /// The newest source revision processed (etcd: the store revision; file: loads so far).
    public var revision: Int64
    /// The revision of the configuration in use.
    public var appliedRevision: Int64
    /// Documents present in the source but not applied, with their problems.
    public var rejections: [DocumentRejection]
    /// How many times a document (or the file) was rejected since start; a counter for metrics.
    public var rejectedTotal: Int
    /// Why the source could not be read last time, while that lasts (cleared by the next success).
    public var lastError: String?
    /// How many times the store lost its source since start (etcd: reconnects).
    public var disconnectsTotal: Int

    public init(
        store: ClusterConfig.Store, connected: Bool = false, revision: Int64 = 0, appliedRevision: Int64 = 0,
        rejections: [DocumentRejection] = [], rejectedTotal: Int = 0, lastError: String? = nil,
        disconnectsTotal: Int = 0
    ) {
        self.store = store
        self.connected = connected
        self.revision = revision
        self.appliedRevision = appliedRevision
        self.rejections = rejections
        self.rejectedTotal = rejectedTotal
        self.lastError = lastError
        self.disconnectsTotal = disconnectsTotal
    }
}
