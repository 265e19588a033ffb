/// A store or membership that cannot start as configured.
public enum ClusterSetupError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalidPrefix(String)
    case sharedSectionsInLocalFile([String])
    /// Not even an empty document set validates (should not happen: the local sections were validated).
    case noValidConfiguration([DocumentRejection])
    case invalidNodeID(String)

    public var description: String {
        switch self {
        case .invalidPrefix(let prefix): "cluster prefix '\(prefix)' must start and end with '/'"
        case .sharedSectionsInLocalFile(let sections):
            "with cluster store etcd, \(sections.joined(separator: ", ")) live in etcd; remove them from the file"
        case .noValidConfiguration(let rejections):
            "no valid configuration in etcd:\n" + rejections.map(\.description).joined(separator: "\n")
        case .invalidNodeID(let id): "invalid node id '\(id)' (use letters, digits, '_', '.', '-')"
        }
    }
}
