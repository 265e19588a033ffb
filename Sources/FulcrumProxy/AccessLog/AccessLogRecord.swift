import FulcrumCore
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// What the access log keeps of one HTTP request or one TCP connection. Filled on the event loop with
/// values it already has (no formatting there); `AccessLogFormatter` turns it into text on the writer thread.
public struct AccessLogRecord: Sendable {
    public enum Kind: String, Sendable {
        case http
        case tcp
    }

    /// How the request or connection ended.
    public enum Outcome: String, Sendable {
        /// A backend answered (HTTP: the whole response was relayed) or the TCP flow ended normally.
        case completed
        /// Fulcrum answered itself (502, 503, 504, 408 ...): no backend could serve the request.
        case proxyAnswered = "proxy_answered"
        /// Cut short: the client left, or the backend failed after part of the response was relayed.
        case aborted
        /// TCP: no backend could be connected (none available, or every attempt failed).
        case noUpstream = "no_upstream"
    }

    public var kind: Kind
    /// Wall-clock time the request or connection ended, in seconds since the epoch.
    public var time: Double
    public var listener: String
    public var client: SocketAddress?
    /// The backend's name (`address:port`); nil when none was reached.
    public var backend: String?
    public var method: String?
    public var uri: String?
    public var version: String?
    public var status: Int?
    /// Bytes from the client: TCP payload, or the HTTP request body.
    public var bytesIn: UInt64
    /// Bytes to the client: TCP payload, or the HTTP response body relayed from the backend.
    public var bytesOut: UInt64
    /// From accept (TCP) or the request head (HTTP) to the end.
    public var durationNanos: UInt64
    /// TCP: from accept until the backend connection was established (including retries).
    public var connectNanos: UInt64?
    /// HTTP: from the request sent to the backend to the response head.
    public var firstByteNanos: UInt64?
    /// Backends tried before the last one (connect failures and retried requests).
    public var retries: Int
    public var outcome: Outcome

    public init(
        kind: Kind, time: Double, listener: String, client: SocketAddress?, backend: String?, method: String? = nil,
        uri: String? = nil, version: String? = nil, status: Int? = nil, bytesIn: UInt64, bytesOut: UInt64,
        durationNanos: UInt64, connectNanos: UInt64? = nil, firstByteNanos: UInt64? = nil, retries: Int,
        outcome: Outcome
    ) {
        self.kind = kind
        self.time = time
        self.listener = listener
        self.client = client
        self.backend = backend
        self.method = method
        self.uri = uri
        self.version = version
        self.status = status
        self.bytesIn = bytesIn
        self.bytesOut = bytesOut
        self.durationNanos = durationNanos
        self.connectNanos = connectNanos
        self.firstByteNanos = firstByteNanos
        self.retries = retries
        self.outcome = outcome
    }

    /// Wall-clock now, in seconds since the epoch (one vDSO call).
    public static func wallClockNow() -> Double {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
    }
}
