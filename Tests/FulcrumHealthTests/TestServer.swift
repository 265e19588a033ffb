import FulcrumCore
import FulcrumTestSupport
import NIOCore
import NIOPosix
import Synchronization

/// A tiny NIO server on 127.0.0.1 for probe tests: it accepts connections and, depending on its
/// mode, answers one raw HTTP/1.1 response per connection or stays silent.
final class TestServer: Sendable {
    enum Mode: Sendable {
        /// Accepts and never answers (a TCP backend, or a hung HTTP one).
        case silent
        /// Answers the first request of each connection with this status and body, then closes.
        case http(status: Int, body: String)
    }

    let port: Int
    let connections: ConnectionLog
    private let channel: any Channel

    private init(port: Int, connections: ConnectionLog, channel: any Channel) {
        self.port = port
        self.connections = connections
        self.channel = channel
    }

    var endpoint: Endpoint { Endpoint(address: .v4(0x7F00_0001), port: UInt16(port)) }

    /// Binds 127.0.0.1:`port` (nil: a free port below the ephemeral range, see `freeLoopbackPort`). Tests stop
    /// servers and then expect their port to refuse, or bind it again; a port-0 pick could meanwhile be handed
    /// to another test's port-0 bind (seen with suites in parallel: probes of a stopped server passed).
    static func start(group: any EventLoopGroup, port: Int? = nil, mode: Mode) async throws -> TestServer {
        guard let port = port ?? freeLoopbackPort() else { throw TestServerError.noFreePort }
        let connections = ConnectionLog()
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    connections.opened(channel)
                    try channel.pipeline.syncOperations.addHandler(
                        RawHTTPHandler(mode: mode, connections: connections))
                }
            }
            .bind(host: "127.0.0.1", port: port)
            .get()
        return TestServer(port: channel.localAddress!.port!, connections: connections, channel: channel)
    }

    /// Stops listening (new connects are refused) and closes every accepted connection.
    func stop() async {
        try? await channel.close()
        for child in connections.takeOpen() {
            try? await child.close()
        }
    }
}

enum TestServerError: Error {
    case noFreePort
}

/// What a `TestServer` saw: connections opened and closed, and the requests received.
final class ConnectionLog: Sendable {
    private struct State {
        var open: [ObjectIdentifier: any Channel] = [:]
        var accepted = 0
        var closed = 0
        var requests: [String] = []
    }
    private let state = Mutex(State())

    var accepted: Int { state.withLock { $0.accepted } }
    var closed: Int { state.withLock { $0.closed } }
    var requests: [String] { state.withLock { $0.requests } }

    func opened(_ channel: any Channel) {
        state.withLock {
            $0.accepted += 1
            $0.open[ObjectIdentifier(channel)] = channel
        }
        channel.closeFuture.whenComplete { _ in
            self.state.withLock {
                $0.closed += 1
                $0.open[ObjectIdentifier(channel)] = nil
            }
        }
    }

    func received(_ request: String) {
        state.withLock { $0.requests.append(request) }
    }

    func takeOpen() -> [any Channel] {
        state.withLock { Array($0.open.values) }
    }
}

/// Reads a request head as raw bytes and writes a canned response (or nothing).
private final class RawHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let mode: TestServer.Mode
    private let connections: ConnectionLog
    private var received: [UInt8] = []
    private var answered = false

    init(mode: TestServer.Mode, connections: ConnectionLog) {
        self.mode = mode
        self.connections = connections
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        guard !answered else { return }
        received += buffer.readBytes(length: buffer.readableBytes) ?? []
        guard let end = received.firstRange(of: Array("\r\n\r\n".utf8)) else { return }
        answered = true
        connections.received(String(decoding: received[..<end.lowerBound], as: UTF8.self))
        guard case .http(let status, let body) = mode else { return }
        let bodyBytes = Array(body.utf8)
        let head = "HTTP/1.1 \(status) Test\r\nContent-Length: \(bodyBytes.count)\r\nConnection: close\r\n\r\n"
        var out = context.channel.allocator.buffer(capacity: head.utf8.count + bodyBytes.count)
        out.writeString(head)
        out.writeBytes(bodyBytes)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(out)).whenComplete { _ in channel.close(promise: nil) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
