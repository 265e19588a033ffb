import FulcrumCore
import NIOCore
import NIOPosix

/// Why no upstream connection could be made; each maps to the client-facing answer (503, 502, 504).
public enum UpstreamError: Error, Sendable, CustomStringConvertible {
    /// Every backend is down, draining, disabled or ejected (or all were tried).
    case noBackendAvailable(pool: String)
    /// The last backend tried refused or failed.
    case connectFailed(backend: Endpoint, reason: String)
    /// The last backend tried did not accept within the connect timeout.
    case connectTimedOut(backend: Endpoint)

    public var description: String {
        switch self {
        case .noBackendAvailable(let pool): return "no backend available in pool '\(pool)'"
        case .connectFailed(let backend, let reason): return "connect to \(backend) failed: \(reason)"
        case .connectTimedOut(let backend): return "connect to \(backend) timed out"
        }
    }
}

/// A connected upstream channel and the backend it leads to.
public struct UpstreamConnection: Sendable {
    public let channel: any Channel
    public let backend: Backend
    /// Backends tried before this one succeeded (they failed).
    public let failedAttempts: Int
}

/// Picks backends and connects to them on the caller's event loop (both sides of a flow stay on one
/// loop), retrying other backends on failure. Shared by the TCP and HTTP proxies; connect failures are
/// reported to the pool (they feed outlier ejection), successes are the caller's to report.
public struct UpstreamConnector: Sendable {
    public var connectTimeout: TimeAmount

    public init(connectTimeout: TimeAmount) {
        self.connectTimeout = connectTimeout
    }

    /// Connects to a backend picked for `key`, trying up to `retries` further backends after failures.
    /// `tried` lists backends that must not be picked (an HTTP retry after a failed request).
    public func connect(
        pool: Pool, snapshot: PoolSnapshot, key: PickKey, retries: Int, excluding tried: [Backend] = [],
        on eventLoop: any EventLoop,
        initializer: @escaping @Sendable (any Channel) throws -> Void
    ) -> EventLoopFuture<UpstreamConnection> {
        attempt(
            pool: pool, snapshot: snapshot, key: key, triesLeft: retries + 1, tried: tried, failures: 0,
            lastError: nil, on: eventLoop, initializer: initializer)
    }

    private func attempt(
        pool: Pool, snapshot: PoolSnapshot, key: PickKey, triesLeft: Int, tried: [Backend], failures: Int,
        lastError: UpstreamError?, on eventLoop: any EventLoop,
        initializer: @escaping @Sendable (any Channel) throws -> Void
    ) -> EventLoopFuture<UpstreamConnection> {
        guard triesLeft > 0 else {
            return eventLoop.makeFailedFuture(lastError ?? UpstreamError.noBackendAvailable(pool: pool.name))
        }
        guard let backend = snapshot.pick(key, excluding: tried) else {
            if lastError == nil { pool.recordNoBackendAvailable() }
            return eventLoop.makeFailedFuture(lastError ?? UpstreamError.noBackendAvailable(pool: pool.name))
        }
        let address: SocketAddress
        do {
            address = try backend.endpoint.socketAddress()
        } catch {
            return eventLoop.makeFailedFuture(
                UpstreamError.connectFailed(backend: backend.endpoint, reason: "\(error)"))
        }
        return ClientBootstrap(group: eventLoop)
            .connectTimeout(connectTimeout)
            // TCP_NODELAY: ClientBootstrap sets it by default (`.socketOption(.tcp_nodelay)` would set SO_DEBUG).
            .channelInitializer { channel in Self.initialize(channel, with: initializer) }
            .connect(to: address)
            .map { UpstreamConnection(channel: $0, backend: backend, failedAttempts: failures) }
            .flatMapError { error in
                pool.reportOutcome(backend, success: false, now: MonotonicClock.now())
                let failure: UpstreamError
                if case ChannelError.connectTimeout = error {
                    failure = .connectTimedOut(backend: backend.endpoint)
                } else {
                    failure = .connectFailed(backend: backend.endpoint, reason: Self.describe(error))
                }
                return attempt(
                    pool: pool, snapshot: snapshot, key: key, triesLeft: triesLeft - 1, tried: tried + [backend],
                    failures: failures + 1, lastError: failure, on: eventLoop, initializer: initializer)
            }
    }

    /// Allows half-close and adds the caller's handlers in one step: a bootstrap channel option would cost
    /// a chain of futures per connection.
    static func initialize(
        _ channel: any Channel, with initializer: (any Channel) throws -> Void
    ) -> EventLoopFuture<Void> {
        channel.eventLoop.makeCompletedFuture {
            try channel.syncOptions?.setOption(.allowRemoteHalfClosure, value: true)
            try initializer(channel)
        }
    }

    static func describe(_ error: any Error) -> String {
        if let io = error as? IOError {
            switch io.errnoCode {
            case 111: return "connection refused"
            case 113: return "no route to host"
            case 110: return "timed out"
            default: return "\(io)"
            }
        }
        if let connect = error as? NIOConnectionError, let first = connect.connectionErrors.first {
            return describe(first.error)
        }
        return "\(error)"
    }
}
