import NIOCore

/// The HTTP proxy's fixed limits, in one place (nginx and HAProxy defaults where they have one).
public enum HTTPLimits {
    /// Request line plus header names and values of one request; above it the client gets 431.
    public static let maxRequestHeaderBytes = 32 * 1024
    /// Header fields of one request (trailers included); above it the client gets 431.
    public static let maxRequestHeaderCount = 100
    /// Status line plus headers of one backend response; above it the client gets 502.
    public static let maxResponseHeaderBytes = 64 * 1024
    /// Header fields of one backend response; above it the client gets 502.
    public static let maxResponseHeaderCount = 256
    /// Idle keep-alive connections kept per backend per event loop.
    public static let maxIdleConnectionsPerBackend = 64
    /// How long an idle upstream connection is kept before Fulcrum closes it. Shorter than most backends'
    /// own keep-alive timeout, so Fulcrum usually closes first and seldom reuses a connection the backend closed.
    public static let upstreamIdleTimeout = TimeAmount.seconds(30)
}
