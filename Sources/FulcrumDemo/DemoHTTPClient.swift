import NIOCore
import NIOHTTP1
import NIOPosix

/// One HTTP/1.1 client connection issuing requests one at a time, every one bounded by a timeout. Used by
/// ``LoadDriver`` and by tests that talk to a ``DemoBackend`` or to the proxy in front of it.
public final class DemoHTTPClient: Sendable {
    /// The host connected to, sent as `Host` unless the request has one.
    public let host: String
    /// The port connected to.
    public let port: Int
    private let channel: any Channel

    private init(host: String, port: Int, channel: any Channel) {
        self.host = host
        self.port = port
        self.channel = channel
    }

    /// Opens a connection, failing after `timeout`.
    public static func connect(
        host: String = "127.0.0.1",
        port: Int,
        timeout: Duration = .seconds(5),
        group: any EventLoopGroup
    ) async throws -> DemoHTTPClient {
        let channel = try await ClientBootstrap(group: group)
            .connectTimeout(TimeAmount(timeout))
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(DemoHTTPClientHandler())
                }
            }
            .connect(host: host, port: port)
            .get()
        return DemoHTTPClient(host: host, port: port, channel: channel)
    }

    /// Connects, sends one request with `Connection: close`, and closes.
    public static func request(
        host: String = "127.0.0.1",
        port: Int,
        _ request: DemoRequest,
        timeout: Duration = .seconds(5),
        group: any EventLoopGroup
    ) async throws -> DemoResponse {
        let client = try await Self.connect(host: host, port: port, timeout: timeout, group: group)
        var request = request
        if !request.headers.contains(where: { $0.name.lowercased() == "connection" }) {
            request.headers.append((name: "Connection", value: "close"))
        }
        do {
            let response = try await client.send(request, timeout: timeout)
            await client.close()
            return response
        } catch {
            await client.close()
            throw error
        }
    }

    /// Sends `request` and waits for the whole response. Throws ``DemoError/timedOut(_:)`` (and closes the
    /// connection) when it is not complete within `timeout`, ``DemoError/connectionClosed`` when the
    /// connection ends first.
    public func send(_ request: DemoRequest, timeout: Duration = .seconds(5)) async throws -> DemoResponse {
        var request = request
        if !request.headers.contains(where: { $0.name.lowercased() == "host" }) {
            request.headers.insert((name: "Host", value: "\(self.host):\(self.port)"), at: 0)
        }
        let promise = self.channel.eventLoop.makePromise(of: DemoResponse.self)
        let exchange = DemoHTTPClientHandler.Exchange(request: request, timeout: timeout, promise: promise)
        // The handler accepts every exchange it sees; a failed write means it never saw this one (closed).
        self.channel.writeAndFlush(exchange).whenFailure { error in promise.fail(error) }
        return try await promise.futureResult.get()
    }

    /// Sends a `GET` for `path`.
    public func get(
        _ path: String,
        headers: [(name: String, value: String)] = [],
        timeout: Duration = .seconds(5)
    ) async throws -> DemoResponse {
        try await self.send(DemoRequest(path: path, headers: headers), timeout: timeout)
    }

    /// Whether the connection is still open.
    public var isActive: Bool { self.channel.isActive }

    /// Closes the connection; in-flight requests fail with ``DemoError/connectionClosed``.
    public func close() async {
        try? await self.channel.close()
    }
}
