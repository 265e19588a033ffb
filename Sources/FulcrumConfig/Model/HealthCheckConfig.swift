/// Active health checking of a pool's backends (`health_check:`): probe every `interval`, a backend is up
/// after `rise` consecutive successes and down after `fall` consecutive failures.
public struct HealthCheckConfig: Sendable, Equatable {
    /// How a backend is probed.
    public enum CheckType: String, CaseIterable, Sendable {
        /// A TCP connect succeeds.
        case tcp
        /// An HTTP/1.1 GET of `path` answers with a status in `expectStatus` (and `expectBody`, if set).
        case http
    }

    public var type: CheckType
    /// HTTP only: the request path (default `/`).
    public var path: String
    /// HTTP only: the Host header (default: the backend address).
    public var host: String?
    public var interval: Duration
    /// Must be > 0 and ≤ interval.
    public var timeout: Duration
    public var rise: Int
    public var fall: Int
    /// HTTP only: accepted status codes (default 200...399).
    public var expectStatus: ClosedRange<Int>
    /// HTTP only: a substring the response body must contain.
    public var expectBody: String?
    /// Probe this port instead of the backend's own.
    public var port: UInt16?
    /// Random spread of each interval, as a fraction (0...0.5), so probes of many backends do not align.
    public var jitter: Double

    public init(
        type: CheckType = .tcp, path: String = "/", host: String? = nil, interval: Duration = .seconds(2),
        timeout: Duration = .seconds(1), rise: Int = 2, fall: Int = 3, expectStatus: ClosedRange<Int> = 200...399,
        expectBody: String? = nil, port: UInt16? = nil, jitter: Double = 0.1
    ) {
        self.type = type
        self.path = path
        self.host = host
        self.interval = interval
        self.timeout = timeout
        self.rise = rise
        self.fall = fall
        self.expectStatus = expectStatus
        self.expectBody = expectBody
        self.port = port
        self.jitter = jitter
    }
}
