import FulcrumCore

/// A proxy listener (`listeners:`): accepts connections on `bind` and proxies them to `pool`.
public struct ListenerConfig: Sendable, Equatable {
    /// L4 (bytes) or L7 (HTTP/1.1 requests).
    public enum Mode: String, CaseIterable, Sendable {
        case tcp
        case http
    }

    /// PROXY protocol header sent to backends, so they see the client address (TCP mode only).
    public enum ProxyProtocol: String, CaseIterable, Sendable {
        case none
        case v1
        case v2
    }

    /// Unique among listeners; used in logs and metrics.
    public var name: String
    /// Port 0 binds an ephemeral port (tests).
    public var bind: Endpoint
    public var mode: Mode
    public var pool: String
    /// How many other backends a failed connection (or idempotent HTTP request) is retried on, 0...10.
    public var retries: Int
    public var proxyProtocol: ProxyProtocol
    public var timeouts: ListenerTimeouts
    /// Cookie-based stickiness (HTTP only); nil disables it.
    public var stickyCookie: StickyCookieConfig?

    public init(
        name: String, bind: Endpoint, mode: Mode = .http, pool: String, retries: Int = 2,
        proxyProtocol: ProxyProtocol = .none, timeouts: ListenerTimeouts = ListenerTimeouts(),
        stickyCookie: StickyCookieConfig? = nil
    ) {
        self.name = name
        self.bind = bind
        self.mode = mode
        self.pool = pool
        self.retries = retries
        self.proxyProtocol = proxyProtocol
        self.timeouts = timeouts
        self.stickyCookie = stickyCookie
    }
}

/// A listener's timeouts (`timeouts:`).
public struct ListenerTimeouts: Sendable, Equatable {
    /// Connecting to a backend.
    public var connect: Duration
    /// No bytes either way on a connection.
    public var idle: Duration
    /// HTTP only: receiving a request's headers from the client.
    public var requestHeaders: Duration
    /// HTTP only: from request sent to response headers received.
    public var response: Duration
    /// On shutdown or reload, how long existing connections may finish; 0 closes them at once.
    public var drain: Duration

    public init(
        connect: Duration = .seconds(5), idle: Duration = .seconds(60), requestHeaders: Duration = .seconds(10),
        response: Duration = .seconds(30), drain: Duration = .seconds(30)
    ) {
        self.connect = connect
        self.idle = idle
        self.requestHeaders = requestHeaders
        self.response = response
        self.drain = drain
    }
}

/// Stickiness by cookie (`sticky_cookie:`): a client whose cookie names a live backend goes back to it.
public struct StickyCookieConfig: Sendable, Equatable {
    public var name: String
    /// Whether Fulcrum sets the cookie itself (true) or only reads one the application sets (false).
    public var insert: Bool

    public init(name: String, insert: Bool = true) {
        self.name = name
        self.insert = insert
    }
}
