/// Why an etcd call failed.
public enum EtcdError: Error, Sendable, Equatable, CustomStringConvertible {
    /// No endpoint could be reached (connection refused, timed out, closed early); the last reason.
    case unreachable(String)
    /// The call took longer than its timeout.
    case timedOut(String)
    /// etcd (or its gateway) answered with an error: HTTP status, gRPC code, message.
    case server(status: Int, code: Int?, message: String)
    /// The answer was not what the v3 JSON API returns.
    case malformedResponse(String)
    /// A compare-and-swap lost: the key's `mod_revision` is no longer the expected one (0: the key is absent).
    case conflict(key: String, expected: Int64, actual: Int64)
    /// The revision to watch from was compacted away; the caller re-reads.
    case compacted(compactRevision: Int64)
    /// The watch was cancelled by etcd for another reason.
    case watchCanceled(String)
    /// An endpoint URL that is not `http://host:port`.
    case invalidEndpoint(String)

    public var description: String {
        switch self {
        case .unreachable(let reason): "etcd unreachable: \(reason)"
        case .timedOut(let what): "etcd call timed out: \(what)"
        case .server(let status, let code, let message):
            "etcd error (HTTP \(status)\(code.map { ", code \($0)" } ?? "")): \(message)"
        case .malformedResponse(let detail): "unexpected etcd response: \(detail)"
        case .conflict(let key, let expected, let actual):
            "conflict on \(key): expected mod_revision \(expected), found \(actual) (someone else wrote it; re-read and retry)"
        case .compacted(let revision): "etcd compacted the history up to revision \(revision)"
        case .watchCanceled(let reason): "etcd cancelled the watch: \(reason)"
        case .invalidEndpoint(let url): "invalid etcd endpoint '\(url)' (expected http://host:port)"
        }
    }
}
