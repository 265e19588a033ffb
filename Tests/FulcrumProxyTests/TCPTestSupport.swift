import FulcrumConfig
import FulcrumCore
import FulcrumProxy
import Logging
import NIOCore
import NIOPosix
import Synchronization
import Testing

/// What a test backend does with each connection.
enum TCPTestBackendBehavior: Sendable {
    /// Echoes every byte (stopping reads while its socket is full); on EOF writes `trailer` and half-closes.
    case echo(trailer: String)
    /// Writes `greeting` and half-closes at once, then records what arrives until EOF.
    case greetAndHalfClose(String)
}

/// A TCP server on 127.0.0.1 that plays a backend.
final class TCPTestBackend: Sendable {
    let endpoint: Endpoint
    let behavior: TCPTestBackendBehavior
    private let serverChannel: any Channel
    private let connections = ConnectionTracker()
    private let acceptedCount = Atomic<Int>(0)
    private let eofCount = Atomic<Int>(0)
    private let receivedTexts = Mutex<[String]>([])

    /// Connections accepted so far.
    var accepted: Int { acceptedCount.load(ordering: .relaxed) }
    /// Connections whose client half-closed (EOF read).
    var eofs: Int { eofCount.load(ordering: .relaxed) }
    /// For `.greetAndHalfClose`: what each connection sent before its EOF.
    var received: [String] { receivedTexts.withLock { $0 } }

    private init(endpoint: Endpoint, behavior: TCPTestBackendBehavior, serverChannel: any Channel) {
        self.endpoint = endpoint
        self.behavior = behavior
        self.serverChannel = serverChannel
    }

    static func start(group: any EventLoopGroup, behavior: TCPTestBackendBehavior) async throws -> TCPTestBackend {
        let box = Mutex<TCPTestBackend?>(nil)
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                guard let backend = box.withLock({ $0 }) else {
                    return channel.eventLoop.makeFailedFuture(ChannelError.ioOnClosedChannel)
                }
                backend.acceptedCount.wrappingAdd(1, ordering: .relaxed)
                backend.connections.track(channel)
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(TCPTestBackendHandler(backend: backend))
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
        let endpoint = Endpoint(address: IPAddress("127.0.0.1")!, port: UInt16(channel.localAddress!.port!))
        let backend = TCPTestBackend(endpoint: endpoint, behavior: behavior, serverChannel: channel)
        box.withLock { $0 = backend }
        return backend
    }

    func stop() async {
        try? await serverChannel.close()
        await connections.drain(grace: .zero)
    }

    fileprivate func sawEOF(received text: String?) {
        eofCount.wrappingAdd(1, ordering: .relaxed)
        if let text { receivedTexts.withLock { $0.append(text) } }
    }
}

/// Echo with backpressure, or greet-and-half-close, per the backend's behavior.
final class TCPTestBackendHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let backend: TCPTestBackend
    private var pendingRead = false
    private var received: [UInt8] = []
    private var eofSeen = false

    init(backend: TCPTestBackend) {
        self.backend = backend
    }

    func channelActive(context: ChannelHandlerContext) {
        if case .greetAndHalfClose(let greeting) = backend.behavior {
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: greeting)), promise: nil)
            context.close(mode: .output, promise: nil)
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        switch backend.behavior {
        case .echo: context.write(wrapOutboundOut(buffer), promise: nil)
        case .greetAndHalfClose: received += buffer.readableBytesView
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func read(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            context.read()
        } else {
            pendingRead = true
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable && pendingRead {
            pendingRead = false
            context.read()
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard case ChannelEvent.inputClosed = event else { return }
        sawEOF()
        if case .echo(let trailer) = backend.behavior {
            // Close only once the echo is written: NIO turns an output shutdown after an input shutdown
            // into a full close that would drop queued writes.
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: trailer))).whenComplete { _ in
                channel.close(promise: nil)
            }
        } else {
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        // With our output already shut down, NIO reports the peer's FIN as a full close, not `inputClosed`.
        if case .greetAndHalfClose = backend.behavior { sawEOF() }
        context.fireChannelInactive()
    }

    private func sawEOF() {
        guard !eofSeen else { return }
        eofSeen = true
        switch backend.behavior {
        case .echo: backend.sawEOF(received: nil)
        case .greetAndHalfClose: backend.sawEOF(received: String(decoding: received, as: UTF8.self))
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// A TCP-mode proxy listener in front of a pool, as the server would build it.
struct TCPTestProxy {
    let pool: Pool
    let listener: ProxyListener
    let statistics: TCPProxyStatistics

    var port: Int { listener.port }

    func backend(_ endpoint: Endpoint) -> Backend {
        pool.snapshot().member(endpoint)!.backend
    }

    /// Active connections over every backend of the pool.
    var activeConnections: Int {
        pool.snapshot().members.reduce(0) { $0 + $1.backend.stats.active }
    }

    /// Waits until every flow has closed on both sides; true when it happened before the deadline.
    func allFlowsClosed(within limit: Duration = .seconds(10)) async -> Bool {
        await tcpEventually(within: limit) {
            statistics.flowsClosed == statistics.flowsOpened && activeConnections == 0
        }
    }
}

/// An event loop group plus everything a test started on it, all torn down at the end.
final class TCPTestEnvironment: Sendable {
    let group: MultiThreadedEventLoopGroup
    private let backends = Mutex<[TCPTestBackend]>([])
    private let listeners = Mutex<[ProxyListener]>([])

    private init(group: MultiThreadedEventLoopGroup) {
        self.group = group
    }

    static func run(_ body: (TCPTestEnvironment) async throws -> Void) async throws {
        let environment = TCPTestEnvironment(group: MultiThreadedEventLoopGroup(numberOfThreads: 2))
        do {
            try await body(environment)
        } catch {
            await environment.tearDown()
            throw error
        }
        await environment.tearDown()
    }

    private func tearDown() async {
        for listener in listeners.withLock({ $0 }) { await listener.shutdown(grace: .zero) }
        for backend in backends.withLock({ $0 }) { await backend.stop() }
        try? await group.shutdownGracefully()
    }

    func backend(_ behavior: TCPTestBackendBehavior = .echo(trailer: "")) async throws -> TCPTestBackend {
        let backend = try await TCPTestBackend.start(group: group, behavior: behavior)
        backends.withLock { $0.append(backend) }
        return backend
    }

    /// An address nobody listens on: a port that was bound and released.
    func deadEndpoint() async throws -> Endpoint {
        let channel = try await ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get()
        let port = channel.localAddress!.port!
        try await channel.close()
        return Endpoint(address: IPAddress("127.0.0.1")!, port: UInt16(port))
    }

    func proxy(
        to endpoints: [Endpoint], algorithm: AlgorithmKind = .roundRobin,
        proxyProtocol: ListenerConfig.ProxyProtocol = .none, retries: Int = 2, idle: Duration = .seconds(30),
        instrumented: Bool = true
    ) async throws -> TCPTestProxy {
        let pool = try Pool(
            name: "tcp-test", settings: PoolSettings(algorithm: algorithm),
            backends: endpoints.map { BackendSpec(endpoint: $0) }, now: MonotonicClock.now())
        let bind = Endpoint(address: IPAddress("127.0.0.1")!, port: 0)
        let config = ListenerConfig(
            name: "tcp-test", bind: bind, mode: .tcp, pool: pool.name, retries: retries, proxyProtocol: proxyProtocol,
            timeouts: ListenerTimeouts(connect: .seconds(2), idle: idle))
        let context = ListenerContext(
            route: ListenerRoute(config: config, pool: pool, hashKey: .source),
            logger: Logger(label: "fulcrum.proxy.test"))
        let statistics = TCPProxyStatistics()
        // Uninstrumented: the plain initializer a server passes (the statistics then stay at zero).
        let listener = try await ProxyListener.bind(
            bind, group: group, context: context,
            childInitializer: instrumented
                ? TCPProxy.childInitializer(statistics: statistics) : TCPProxy.childInitializer)
        listeners.withLock { $0.append(listener) }
        return TCPTestProxy(pool: pool, listener: listener, statistics: statistics)
    }

    /// A client connection with half-closure; a watchdog closes it after `watchdog` so no read waits forever.
    func connect(
        to port: Int, watchdog: TimeAmount = .seconds(15)
    ) async throws -> NIOAsyncChannel<ByteBuffer, ByteBuffer> {
        let client = try await ClientBootstrap(group: group)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(
                        wrappingChannelSynchronously: channel,
                        configuration: .init(isOutboundHalfClosureEnabled: true))
                }
            }
        let channel = client.channel
        let timer = channel.eventLoop.scheduleTask(in: watchdog) { channel.close(promise: nil) }
        channel.closeFuture.whenComplete { _ in timer.cancel() }
        return client
    }

    /// Sends `text`, half-closes, and returns everything received until the proxy closes its side.
    func exchange(_ text: String, through port: Int) async throws -> String {
        let client = try await connect(to: port)
        return try await client.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(string: text))
            outbound.finish()
            return String(decoding: try await tcpReadToEnd(inbound), as: UTF8.self)
        }
    }
}

/// Everything a stream delivers until EOF (the watchdog bounds the wait).
func tcpReadToEnd(_ inbound: NIOAsyncChannelInboundStream<ByteBuffer>) async throws -> [UInt8] {
    var bytes: [UInt8] = []
    for try await buffer in inbound { bytes += buffer.readableBytesView }
    return bytes
}

/// Polls `condition` until it holds or `limit` passes; true when it held.
func tcpEventually(within limit: Duration = .seconds(10), _ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + limit
    while ContinuousClock.now < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(5))
    }
    return condition()
}
