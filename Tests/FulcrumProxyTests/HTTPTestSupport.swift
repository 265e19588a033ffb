import FulcrumConfig
import FulcrumCore
import FulcrumDemo
import FulcrumTestSupport
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import Testing

@testable import FulcrumProxy

#if canImport(Glibc)
import Glibc
#endif

/// A running HTTP proxy in front of some backends, on its own event loop group.
struct HTTPProxyHarness: Sendable {
    let group: MultiThreadedEventLoopGroup
    let backends: [DemoBackend]
    let pool: Pool
    let listener: ProxyListener

    var port: Int { listener.port }

    /// Starts `backendCount` demo backends (plus `extra` endpoints, e.g. dead ports or test servers) and a
    /// proxy listener on 127.0.0.1 port 0.
    static func start(
        backends backendCount: Int = 3, extra: [Endpoint] = [], algorithm: AlgorithmKind = .roundRobin,
        hashKey: HashKey = .source, retries: Int = 2, timeouts: ListenerTimeouts = ListenerTimeouts(),
        stickyCookie: StickyCookieConfig? = nil, threads: Int = 2
    ) async throws -> HTTPProxyHarness {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        var backends: [DemoBackend] = []
        do {
            for index in 0..<backendCount {
                backends.append(try await DemoBackend.start(name: "b\(index)", group: group))
            }
            let endpoints = backends.map { Endpoint(address: .v4(0x7F00_0001), port: UInt16($0.port)) } + extra
            let pool = try Pool(
                name: "web", settings: PoolSettings(algorithm: algorithm),
                backends: endpoints.map { BackendSpec(endpoint: $0) }, now: MonotonicClock.now())
            let config = ListenerConfig(
                name: "http-test", bind: Endpoint(address: .v4(0x7F00_0001), port: 0), mode: .http, pool: "web",
                retries: retries, timeouts: timeouts, stickyCookie: stickyCookie)
            var logger = Logger(label: "fulcrum.test")
            logger.logLevel = .warning
            let context = ListenerContext(
                route: ListenerRoute(config: config, pool: pool, hashKey: hashKey), logger: logger)
            let listener = try await ProxyListener.bind(
                config.bind, group: group, context: context, childInitializer: HTTPProxy.childInitializer)
            return HTTPProxyHarness(group: group, backends: backends, pool: pool, listener: listener)
        } catch {
            for backend in backends { try? await backend.stop() }
            try? await group.shutdownGracefully()
            throw error
        }
    }

    func stop() async {
        await listener.shutdown(grace: .milliseconds(100))
        for backend in backends { try? await backend.stop() }
        try? await group.shutdownGracefully()
    }

    /// Runs `body` with a started harness and always stops it.
    static func with(
        backends: Int = 3, extra: [Endpoint] = [], algorithm: AlgorithmKind = .roundRobin, hashKey: HashKey = .source,
        retries: Int = 2, timeouts: ListenerTimeouts = ListenerTimeouts(), stickyCookie: StickyCookieConfig? = nil,
        _ body: @Sendable (HTTPProxyHarness) async throws -> Void
    ) async throws {
        let harness = try await start(
            backends: backends, extra: extra, algorithm: algorithm, hashKey: hashKey, retries: retries,
            timeouts: timeouts, stickyCookie: stickyCookie)
        do {
            try await body(harness)
            await harness.stop()
        } catch {
            await harness.stop()
            throw error
        }
    }

    func client() async throws -> DemoHTTPClient {
        try await DemoHTTPClient.connect(port: port, group: group)
    }

    var totalRequests: Int { backends.reduce(0) { $0 + $1.requests } }
    var totalConnections: Int { backends.reduce(0) { $0 + $1.connectionsAccepted } }
}

/// A 127.0.0.1 endpoint nothing listens on: connecting to it is refused. The port is drawn below the ephemeral
/// range (`freeLoopbackPort`), so no other test's bind to port 0 takes it meanwhile.
func httpRefusedEndpoint(group: any EventLoopGroup) async throws -> Endpoint {
    Endpoint(address: .v4(0x7F00_0001), port: UInt16(try #require(freeLoopbackPort())))
}

/// Fails with `HTTPTestTimeout` when `body` takes longer than `seconds`.
func httpWithDeadline<T: Sendable>(
    _ seconds: Double, _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { tasks in
        tasks.addTask { try await body() }
        tasks.addTask {
            try await Task.sleep(for: .seconds(seconds))
            throw HTTPTestTimeout(seconds: seconds)
        }
        let result = try await tasks.next()!
        tasks.cancelAll()
        return result
    }
}

struct HTTPTestTimeout: Error, CustomStringConvertible {
    var seconds: Double
    var description: String { "no result within \(seconds) s" }
}

/// A plain TCP connection for sending exact bytes and reading what comes back.
final class HTTPRawConnection: Sendable {
    let channel: any Channel
    private let inbox: HTTPRawInbox

    private init(channel: any Channel, inbox: HTTPRawInbox) {
        self.channel = channel
        self.inbox = inbox
    }

    static func connect(port: Int, group: any EventLoopGroup) async throws -> HTTPRawConnection {
        let inbox = HTTPRawInbox()
        let channel = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(HTTPRawCollector(inbox: inbox))
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        return HTTPRawConnection(channel: channel, inbox: inbox)
    }

    func send(_ text: String) async throws {
        try await channel.writeAndFlush(ByteBuffer(string: text))
    }

    /// Everything received until the peer closes, within `seconds`.
    func readToEnd(within seconds: Double = 5) async throws -> String {
        try await httpWaitUntil(seconds) { [inbox] in inbox.state.withLock { $0.closed } }
        return inbox.state.withLock { $0.text }
    }

    /// What was received once it contains `marker` (or the peer closed), within `seconds`.
    func read(until marker: String, within seconds: Double = 5) async throws -> String {
        try await httpWaitUntil(seconds) { [inbox] in inbox.state.withLock { $0.text.contains(marker) || $0.closed } }
        return inbox.state.withLock { state in
            defer { state.text = "" }
            return state.text
        }
    }

    func close() async {
        try? await channel.close()
    }

    /// Connects, sends `request`, returns everything until the proxy closes.
    static func exchange(
        _ request: String, port: Int, group: any EventLoopGroup, within seconds: Double = 5
    )
        async throws -> String
    {
        let connection = try await connect(port: port, group: group)
        do {
            try await connection.send(request)
            let text = try await connection.readToEnd(within: seconds)
            await connection.close()
            return text
        } catch {
            await connection.close()
            throw error
        }
    }
}

final class HTTPRawInbox: Sendable {
    let state = Mutex<(text: String, closed: Bool)>(("", false))
}

private final class HTTPRawCollector: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let inbox: HTTPRawInbox

    init(inbox: HTTPRawInbox) {
        self.inbox = inbox
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let text = String(buffer: unwrapInboundIn(data))
        inbox.state.withLock { $0.text += text }
    }

    func channelInactive(context: ChannelHandlerContext) {
        inbox.state.withLock { $0.closed = true }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// A misbehaving backend: reads a request head, counts it, then answers with `reply` (nil: nothing) and closes.
final class HTTPScriptedBackend: Sendable {
    let channel: any Channel
    private let counters: HTTPScriptedCounters

    var port: Int { channel.localAddress!.port! }
    var endpoint: Endpoint { Endpoint(address: .v4(0x7F00_0001), port: UInt16(port)) }

    private init(channel: any Channel, counters: HTTPScriptedCounters) {
        self.channel = channel
        self.counters = counters
    }

    static func start(reply: String?, group: any EventLoopGroup) async throws -> HTTPScriptedBackend {
        let counters = HTTPScriptedCounters()
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                counters.connections.add(1, ordering: .relaxed)
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        HTTPScriptedHandler(reply: reply, counters: counters))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return HTTPScriptedBackend(channel: channel, counters: counters)
    }

    var requestCount: Int { counters.requests.load(ordering: .relaxed) }
    var connectionCount: Int { counters.connections.load(ordering: .relaxed) }

    func stop() async {
        try? await channel.close()
    }
}

final class HTTPScriptedCounters: Sendable {
    let requests = Atomic<Int>(0)
    let connections = Atomic<Int>(0)
}

private final class HTTPScriptedHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let reply: String?
    let counters: HTTPScriptedCounters
    var received = ""

    init(reply: String?, counters: HTTPScriptedCounters) {
        self.reply = reply
        self.counters = counters
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        received += String(buffer: unwrapInboundIn(data))
        guard received.contains("\r\n\r\n") else { return }
        received = ""
        counters.requests.add(1, ordering: .relaxed)
        if let reply {
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: reply))).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
        } else {
            context.close(promise: nil)
        }
    }
}

/// Resident memory of this process in bytes (Linux), for bounded-memory checks.
func httpResidentBytes() -> Int {
    guard let file = fopen("/proc/self/statm", "r") else { return 0 }
    defer { fclose(file) }
    var line = [CChar](repeating: 0, count: 256)
    guard fgets(&line, Int32(line.count), file) != nil else { return 0 }
    let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    let fields = text.split(separator: " ")
    guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
    return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
}

/// The `/bytes/N` pattern (byte i is i % 251), long enough to compare any read against with one memcmp.
let httpPatternBlock: [UInt8] = (0..<(1 << 20) + 251).map { DemoBackend.patternByte(at: $0) }

/// Streams a request body of `uploadLength` pattern bytes (by writability) while checking that the response
/// body is the pattern too, without keeping either.
final class HTTPStreamingClientHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    struct Result: Sendable {
        var status: Int
        var bytes: Int
        var firstMismatch: Int?
    }

    private let head: HTTPRequestHead
    private let uploadLength: Int
    private let promise: EventLoopPromise<Result>
    private var uploaded = 0
    private var ended = false
    private var status = 0
    private var received = 0
    private var firstMismatch: Int?
    private var done = false

    init(head: HTTPRequestHead, uploadLength: Int, promise: EventLoopPromise<Result>) {
        self.head = head
        self.uploadLength = uploadLength
        self.promise = promise
    }

    func channelActive(context: ChannelHandlerContext) {
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        pump(context: context)
        context.fireChannelActive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        pump(context: context)
        context.fireChannelWritabilityChanged()
    }

    private func pump(context: ChannelHandlerContext) {
        while context.channel.isWritable && uploaded < uploadLength {
            let length = min(64 * 1024, uploadLength - uploaded)
            let start = uploaded % 251
            var buffer = context.channel.allocator.buffer(capacity: length)
            buffer.writeBytes(httpPatternBlock[start..<start + length])
            uploaded += length
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        if uploaded == uploadLength && !ended {
            ended = true
            context.write(wrapOutboundOut(.end(nil)), promise: nil)
        }
        context.flush()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let response):
            status = Int(response.status.code)
        case .body(let buffer):
            if firstMismatch == nil {
                var offset = 0
                buffer.withUnsafeReadableBytes { bytes in
                    while offset < bytes.count && firstMismatch == nil {
                        let length = min(1 << 20, bytes.count - offset)
                        let start = (received + offset) % 251
                        let equal = httpPatternBlock.withUnsafeBytes { block in
                            memcmp(bytes.baseAddress! + offset, block.baseAddress! + start, length) == 0
                        }
                        if !equal { firstMismatch = received + offset }
                        offset += length
                    }
                }
            }
            received += buffer.readableBytes
        case .end:
            done = true
            promise.succeed(Result(status: status, bytes: received, firstMismatch: firstMismatch))
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !done { promise.fail(DemoError.connectionClosed) }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// One streamed request through `port`: uploads `uploadLength` pattern bytes and checks the response body.
func httpStreamingRequest(
    method: HTTPMethod, path: String, uploadLength: Int, port: Int, group: any EventLoopGroup
) async throws -> HTTPStreamingClientHandler.Result {
    let promise = group.next().makePromise(of: HTTPStreamingClientHandler.Result.self)
    var headers = HTTPHeaders([("Host", "test")])
    if uploadLength > 0 { headers.add(name: "Content-Length", value: String(uploadLength)) }
    let head = HTTPRequestHead(version: .http1_1, method: method, uri: path, headers: headers)
    let channel = try await ClientBootstrap(group: group)
        .channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHTTPClientHandlers()
                try channel.pipeline.syncOperations.addHandler(
                    HTTPStreamingClientHandler(head: head, uploadLength: uploadLength, promise: promise))
            }
        }
        .connect(host: "127.0.0.1", port: port).get()
    do {
        let result = try await promise.futureResult.get()
        try? await channel.close()
        return result
    } catch {
        try? await channel.close()
        throw error
    }
}

/// Polls `condition` (a counter another task advances) until it holds, within `seconds`.
func httpWaitUntil(_ seconds: Double = 5, _ condition: @escaping @Sendable () -> Bool) async throws {
    try await httpWithDeadline(seconds) {
        while !condition() { try await Task.sleep(for: .milliseconds(2)) }
    }
}
