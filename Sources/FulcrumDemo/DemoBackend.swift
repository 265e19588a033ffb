import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// An in-process HTTP/1.1 server for demos, proxy integration tests and benchmarks.
///
/// Routes (any method unless stated):
/// - `GET /` and every path not below: `200`, body `"<name>\n"`, after ``DemoBehavior/latency``.
/// - `GET /healthz`: `200 ok` or `503 unhealthy` (see ``DemoBehavior/flaky`` and ``setHealthy(_:)``).
/// - `POST|PUT /echo`: streams the request body back as it arrives (chunked), with read backpressure.
/// - `GET /bytes/N`: streams N bytes, byte i being `i % 251` (``DemoBackend/patternByte(at:)``), by writability.
/// - `GET /status/NNN`: answers with status NNN (200...599).
/// - `GET /headers`: the request headers as `name: value` lines, in the order received.
/// - `GET /close-without-response`: closes the connection without answering.
/// - `GET /slow/MS`: answers like `/` after MS milliseconds (instead of the configured latency).
/// Every response carries `X-Backend: <name>`. Keep-alive, pipelining and half-closed requests are supported.
public final class DemoBackend: Sendable {
    /// The name given at start; the body of `/` and the value of `X-Backend`.
    public let name: String
    /// The host the server is bound to.
    public let host: String
    /// The port the server is bound to (the real one when started with port 0).
    public let port: Int
    /// The behaviour given at start.
    public var behavior: DemoBehavior { self.state.behavior }

    private let state: DemoBackendState
    private let serverChannel: any Channel

    private init(name: String, host: String, port: Int, state: DemoBackendState, serverChannel: any Channel) {
        self.name = name
        self.host = host
        self.port = port
        self.state = state
        self.serverChannel = serverChannel
    }

    /// Binds and starts serving; returns once the socket listens.
    public static func start(
        name: String,
        host: String = "127.0.0.1",
        port: Int = 0,
        behavior: DemoBehavior = .default,
        group: any EventLoopGroup
    ) async throws -> DemoBackend {
        let state = DemoBackendState(name: name, behavior: behavior)
        let serverChannel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(DemoHTTPHandler(state: state))
                    state.connectionOpened(channel)
                }
            }
            .bind(host: host, port: port)
            .get()
        guard let boundPort = serverChannel.localAddress?.port else {
            try? await serverChannel.close()
            throw DemoError.notBound(host: host, port: port)
        }
        return DemoBackend(name: name, host: host, port: boundPort, state: state, serverChannel: serverChannel)
    }

    /// Stops listening and closes every open connection at once (in-flight requests get no answer), like a
    /// backend that dies. Safe to call more than once.
    public func stop() async throws {
        do {
            try await self.serverChannel.close()
        } catch ChannelError.alreadyClosed {
            // A second stop: nothing left to do for the listener.
        }
        for channel in self.state.takeOpenConnections() {
            try? await channel.close()
        }
    }

    /// Forces `/healthz` to `503` (false) or lets it follow the behaviour again (true).
    public func setHealthy(_ healthy: Bool) {
        self.state.manuallyHealthy.store(healthy, ordering: .relaxed)
    }

    /// Whether `/healthz` would answer `200` right now.
    public var isHealthy: Bool { self.state.isHealthy() }

    /// Requests received (counted when their head arrives), all routes.
    public var requests: Int { self.state.requests.load(ordering: .relaxed) }
    /// Connections accepted since start.
    public var connectionsAccepted: Int { self.state.connectionsAccepted.load(ordering: .relaxed) }
    /// Connections open right now.
    public var activeConnections: Int { self.state.activeConnections.load(ordering: .relaxed) }

    /// Response body bytes handed to the network so far (`/bytes` and `/echo`); with a client that does not
    /// read, this stops growing: the backend respects backpressure.
    public var bodyBytesWritten: Int { self.state.bodyBytesWritten.load(ordering: .relaxed) }

    /// Requests per path (without query). After 1,024 distinct paths the rest are counted under `"other"`.
    public func requestsByPath() -> [String: Int] {
        self.state.requestsByPath.withLock { $0 }
    }

    /// The byte at offset `index` of a `/bytes/N` body.
    public static func patternByte(at index: Int) -> UInt8 {
        UInt8(truncatingIfNeeded: index % 251)
    }
}

/// What the handlers of one backend share: its identity, behaviour and counters.
final class DemoBackendState: Sendable {
    static let maxDistinctPaths = 1024

    let name: String
    let behavior: DemoBehavior
    let startedAt: ContinuousClock.Instant
    let manuallyHealthy = Atomic<Bool>(true)
    let requests = Atomic<Int>(0)
    let rootRequests = Atomic<Int>(0)
    let connectionsAccepted = Atomic<Int>(0)
    let activeConnections = Atomic<Int>(0)
    let bodyBytesWritten = Atomic<Int>(0)
    let requestsByPath = Mutex<[String: Int]>([:])
    /// Open connections, so `stop()` can close them; `nil` once stopped.
    private let openConnections = Mutex<[ObjectIdentifier: any Channel]?>([:])

    init(name: String, behavior: DemoBehavior) {
        self.name = name
        self.behavior = behavior
        self.startedAt = .now
    }

    func isHealthy() -> Bool {
        guard self.manuallyHealthy.load(ordering: .relaxed) else { return false }
        guard let flaky = self.behavior.flaky else { return true }
        return flaky.isHealthy(after: .now - self.startedAt)
    }

    func requestReceived(path: String) {
        self.requests.add(1, ordering: .relaxed)
        self.requestsByPath.withLock { counts in
            if counts[path] != nil || counts.count < Self.maxDistinctPaths {
                counts[path, default: 0] += 1
            } else {
                counts["other", default: 0] += 1
            }
        }
    }

    /// Whether the next `/` request should fail, per ``DemoBehavior/errorRate`` (evenly spread).
    func nextRootRequestFails() -> Bool {
        let rate = self.behavior.errorRate
        guard rate > 0 else { return false }
        let n = Double(self.rootRequests.wrappingAdd(1, ordering: .relaxed).newValue)
        return (n * rate).rounded(.down) != ((n - 1) * rate).rounded(.down)
    }

    func bodyBytesSent(_ count: Int) {
        self.bodyBytesWritten.add(count, ordering: .relaxed)
    }

    func connectionOpened(_ channel: any Channel) {
        self.connectionsAccepted.add(1, ordering: .relaxed)
        self.activeConnections.add(1, ordering: .relaxed)
        let id = ObjectIdentifier(channel)
        let registered = self.openConnections.withLock { connections in
            connections?[id] = channel
            return connections != nil
        }
        channel.closeFuture.whenComplete { _ in
            self.activeConnections.subtract(1, ordering: .relaxed)
            self.openConnections.withLock { _ = $0?.removeValue(forKey: id) }
        }
        if !registered {
            // Accepted while the backend was stopping.
            channel.close(promise: nil)
        }
    }

    /// Marks the backend stopped and returns the connections still open.
    func takeOpenConnections() -> [any Channel] {
        self.openConnections.withLock { connections in
            defer { connections = nil }
            return Array(connections?.values ?? [:].values)
        }
    }
}
