/// Why the admin listener could not start; the message is meant for the operator.
public enum AdminServerError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The token file is missing, unreadable or empty.
    case tokenFile(path: String, reason: String)
    /// A non-loopback listener without a token would let anyone on the network change pools.
    case tokenRequired(listen: String)
    case bindFailed(listen: String, reason: String)

    public var description: String {
        switch self {
        case .tokenFile(let path, let reason): return "admin token_file '\(path)': \(reason)"
        case .tokenRequired(let listen):
            return "admin listener \(listen) is not loopback: a token_file is required"
        case .bindFailed(let listen, let reason): return "admin listener \(listen): cannot bind: \(reason)"
        }
    }
}
