/// Errors of the demo backends, the demo client and the load driver.
public enum DemoError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The server socket has no local port after binding.
    case notBound(host: String, port: Int)
    /// No response (or no connection) within the timeout.
    case timedOut(Duration)
    /// The connection closed before the response was complete.
    case connectionClosed
    /// A request was sent while another one was still in flight on the same connection.
    case requestInFlight

    public var description: String {
        switch self {
        case .notBound(let host, let port): "demo backend could not bind \(host):\(port)"
        case .timedOut(let duration): "no response within \(duration)"
        case .connectionClosed: "connection closed before the response was complete"
        case .requestInFlight: "a request is already in flight on this connection"
        }
    }
}
