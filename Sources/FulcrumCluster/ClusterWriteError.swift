/// A write the store refused before sending it.
public enum ClusterWriteError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The document set would not validate after the write.
    case invalid([DocumentProblem])
    /// Node records are written by ``ClusterMembership`` only.
    case notConfiguration(String)

    public var description: String {
        switch self {
        case .invalid(let problems): problems.map(\.description).joined(separator: "\n")
        case .notConfiguration(let key): "\(key) is not a configuration document"
        }
    }
}
