import Foundation

/// What a live node publishes about itself at `<prefix>nodes/<id>` (JSON, under its lease).
public struct NodeRecord: Sendable, Equatable, Codable {
    /// The node's name in the cluster (`cluster.node_name`, default the host name).
    public var id: String
    /// Where its admin API listens (`host:port`), so `fulcrum ctl` can be pointed at any node.
    public var adminAddress: String?
    /// The etcd revision of the configuration it runs.
    public var configRevision: Int64
    /// `serving`, `degraded` (etcd lost, or documents rejected), or what the server reports.
    public var health: String
    /// Whether its configuration store is connected to etcd.
    public var storeConnected: Bool

    public init(
        id: String, adminAddress: String? = nil, configRevision: Int64 = 0, health: String = "serving",
        storeConnected: Bool = true
    ) {
        self.id = id
        self.adminAddress = adminAddress
        self.configRevision = configRevision
        self.health = health
        self.storeConnected = storeConnected
    }

    enum CodingKeys: String, CodingKey {
        case id
        case adminAddress = "admin_address"
        case configRevision = "config_revision"
        case health
        case storeConnected = "store_connected"
    }

    func json() -> [UInt8] {
        (try? Array(JSONEncoder().encode(self))) ?? []
    }

    static func decode(_ bytes: [UInt8]) -> NodeRecord? {
        try? JSONDecoder().decode(NodeRecord.self, from: Data(bytes))
    }
}
