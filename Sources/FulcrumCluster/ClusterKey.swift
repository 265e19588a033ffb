/// Where one shared document lives under the cluster's key prefix (see docs/cluster.md).
///
/// `<prefix>pools/<name>` holds one pool (the body of `pools.<name>` in the YAML file),
/// `<prefix>listeners/<name>` one listener and `<prefix>virtual_services/<name>` one virtual service (the
/// body of an item of those lists), and `<prefix>nodes/<id>` one live node's ``NodeRecord`` under a lease.
public enum ClusterKey: Sendable, Hashable, Comparable, CustomStringConvertible {
    case pool(String)
    case listener(String)
    case virtualService(String)
    case node(String)

    /// The directory of each kind under the prefix, in the order documents are assembled.
    public static let poolsDirectory = "pools/"
    public static let listenersDirectory = "listeners/"
    public static let virtualServicesDirectory = "virtual_services/"
    public static let nodesDirectory = "nodes/"

    /// The name after the directory.
    public var name: String {
        switch self {
        case .pool(let name), .listener(let name), .virtualService(let name), .node(let name): name
        }
    }

    /// The path below the prefix, e.g. `pools/web`.
    public var relativePath: String {
        switch self {
        case .pool(let name): Self.poolsDirectory + name
        case .listener(let name): Self.listenersDirectory + name
        case .virtualService(let name): Self.virtualServicesDirectory + name
        case .node(let id): Self.nodesDirectory + id
        }
    }

    /// Whether the key holds part of the configuration (as opposed to membership).
    public var isConfiguration: Bool {
        if case .node = self { return false }
        return true
    }

    public var description: String { relativePath }

    /// The full etcd key under `prefix`.
    public func key(under prefix: String) -> String { prefix + relativePath }

    /// Parses a path below the prefix; nil for anything the layout does not define (reported, not used).
    public init?(relativePath path: Substring) {
        let directories: [(String, (String) -> ClusterKey)] = [
            (Self.poolsDirectory, ClusterKey.pool), (Self.listenersDirectory, ClusterKey.listener),
            (Self.virtualServicesDirectory, ClusterKey.virtualService), (Self.nodesDirectory, ClusterKey.node),
        ]
        for (directory, make) in directories where path.hasPrefix(directory) {
            let name = path.dropFirst(directory.count)
            // One level only: a name with '/' would be a second directory the layout does not have.
            guard Self.isValidName(name) else { return nil }
            self = make(String(name))
            return
        }
        return nil
    }

    /// Names follow the config's rule for pool and listener names: `[A-Za-z0-9_.-]+`.
    public static func isValidName(_ name: some StringProtocol) -> Bool {
        !name.isEmpty && name.count <= 253
            && name.unicodeScalars.allSatisfy { scalar in
                switch scalar {
                case "a"..."z", "A"..."Z", "0"..."9", "_", ".", "-": true
                default: false
                }
            }
    }

    private var order: Int {
        switch self {
        case .pool: 0
        case .listener: 1
        case .virtualService: 2
        case .node: 3
        }
    }

    public static func < (a: ClusterKey, b: ClusterKey) -> Bool {
        (a.order, a.name) < (b.order, b.name)
    }
}
