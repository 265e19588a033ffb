import Logging
import NIOCore
import NIOEmbedded
import Testing

@testable import FulcrumProxy

@Suite("TCP glue handler")
struct TCPGlueHandlerTests {
    private func gluedPair(
        idle: TimeAmount? = nil, on loop: EmbeddedEventLoop = EmbeddedEventLoop()
    ) throws -> (client: EmbeddedChannel, upstream: EmbeddedChannel) {
        let client = EmbeddedChannel(loop: loop)
        let upstream = EmbeddedChannel(loop: loop)
        let logger = Logger(label: "test")
        let clientSide = TCPGlueHandler(
            isClientSide: true, statistics: nil, logger: logger, lingerTimeout: .seconds(1), idleTimeout: idle)
        let upstreamSide = TCPGlueHandler(
            isClientSide: false, statistics: nil, logger: logger, lingerTimeout: .seconds(1))
        try client.pipeline.syncOperations.addHandler(clientSide)
        try upstream.pipeline.syncOperations.addHandler(upstreamSide)
        try client.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try upstream.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 2)).wait()
        // Bytes that arrive before the upstream connects are kept and passed on once glued.
        try client.writeInbound(ByteBuffer(string: "early"))
        TCPGlueHandler.glue(client: clientSide, upstream: upstreamSide)
        #expect(try upstream.readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "early"))
        return (client, upstream)
    }

    @Test func relaysBytesBothWays() throws {
        let (client, upstream) = try gluedPair()
        try client.writeInbound(ByteBuffer(string: "request"))
        #expect(try upstream.readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "request"))
        try upstream.writeInbound(ByteBuffer(string: "response"))
        #expect(try client.readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "response"))
        _ = try? client.finish()
        _ = try? upstream.finish()
    }

    @Test func aDrainEventLeavesTheFlowRunning() throws {
        let (client, upstream) = try gluedPair()
        client.pipeline.fireUserInboundEventTriggered(ListenerDrainEvent())
        #expect(client.isActive && upstream.isActive)
        try client.writeInbound(ByteBuffer(string: "still here"))
        #expect(try upstream.readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "still here"))
        _ = try? client.finish()
        _ = try? upstream.finish()
    }

    @Test func theIdleTimeoutClosesBothSidesAndTrafficEitherWayPostponesIt() throws {
        let loop = EmbeddedEventLoop()
        let (client, upstream) = try gluedPair(idle: .seconds(1), on: loop)
        loop.advanceTime(by: .milliseconds(700))
        try client.writeInbound(ByteBuffer(string: "from the client"))
        loop.advanceTime(by: .milliseconds(700))
        #expect(client.isActive && upstream.isActive)
        try upstream.writeInbound(ByteBuffer(string: "to the client"))
        loop.advanceTime(by: .milliseconds(700))
        #expect(client.isActive && upstream.isActive)
        // One second after the last byte (plus the shared timer's 10 ms grain).
        loop.advanceTime(by: .milliseconds(400))
        #expect(!client.isActive)
        #expect(!upstream.isActive)
    }

    @Test func anErrorOnOneSideClosesBoth() throws {
        let (client, upstream) = try gluedPair()
        upstream.pipeline.fireErrorCaught(ChannelError.connectPending)
        #expect(!client.isActive)
        #expect(!upstream.isActive)
    }
}
