import FulcrumProxy
import NIOCore
import NIOPosix
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc  // memcmp
#endif

@Suite("TCP proxy backpressure")
struct TCPBackpressureTests {
    static let payloadSize = 50 * 1024 * 1024

    /// 50 MB through the proxy to an echo backend and back to a client that reads at most 32 KiB per
    /// millisecond: every byte must come back in order, and the proxy must hold only a bounded amount
    /// (it stops reading a side whose partner cannot take more).
    @Test func fiftyMegabytesEchoToASlowReaderWithBoundedMemory() async throws {
        try await TCPTestEnvironment.run { env in
            let backend = try await env.backend()
            let proxy = try await env.proxy(to: [backend.endpoint])
            let pattern = TCPTestPattern()
            let report = TCPSlowReaderReport()
            let done = env.group.next().makePromise(of: Void.self)
            let started = ContinuousClock.now
            let client = try await ClientBootstrap(group: env.group)
                .channelOption(.allowRemoteHalfClosure, value: true)
                .channelOption(.autoRead, value: false)
                .channelOption(.maxMessagesPerRead, value: 1)
                .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 32 * 1024))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            TCPSlowReaderClient(
                                total: Self.payloadSize, pattern: pattern, report: report,
                                statistics: proxy.statistics, done: done))
                    }
                }
                .connect(host: "127.0.0.1", port: proxy.port)
                .get()
            // Bounds the wait: closing the client fails `done` unless every byte came back.
            let watchdog = client.eventLoop.scheduleTask(in: .seconds(120)) { client.close(promise: nil) }
            let outcome: Result<Void, any Error>
            do {
                outcome = .success(try await done.futureResult.get())
            } catch {
                outcome = .failure(error)
            }
            watchdog.cancel()
            try? await client.close()
            let elapsed = ContinuousClock.now - started

            #expect(throws: Never.self) { try outcome.get() }
            #expect(report.received == Self.payloadSize)
            #expect(report.firstMismatch == nil)
            #expect(proxy.statistics.bytesFromClients == UInt64(Self.payloadSize))
            #expect(proxy.statistics.bytesFromBackends == UInt64(Self.payloadSize))
            // Backpressure engaged: while the stream flows, the proxy holds at most one socket's high water
            // mark (64 KiB) plus one read cycle (4 reads of up to 64 KiB) per direction.
            #expect(proxy.statistics.readPauses > 0)
            let steadyPeak = try #require(report.steadyPeakQueued)
            #expect(steadyPeak <= 512 * 1024)
            // At a FIN, NIO reads everything the kernel holds for that socket before reporting EOF, whether or
            // not a read was asked for; that burst is bounded by the socket's receive buffer, not by the stream.
            #expect(proxy.statistics.peakQueuedBytes < Self.payloadSize / 2)
            #expect(elapsed < .seconds(120))
            #expect(await proxy.allFlowsClosed())
        }
    }
}

/// A deterministic byte stream with a long prime period, so a lost, repeated or reordered chunk shows.
final class TCPTestPattern: Sendable {
    static let period = 1_000_003
    /// Two periods back to back, so any chunk up to one period long is one contiguous slice.
    let bytes: [UInt8]

    init() {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        var period = [UInt8]()
        period.reserveCapacity(Self.period)
        for _ in 0..<Self.period {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            period.append(UInt8(truncatingIfNeeded: state))
        }
        bytes = period + period
    }

    func slice(at offset: Int, count: Int) -> ArraySlice<UInt8> {
        let start = offset % Self.period
        return bytes[start..<start + count]
    }

    func matches(_ buffer: ByteBuffer, at offset: Int) -> Bool {
        let expected = slice(at: offset, count: buffer.readableBytes)
        return buffer.withUnsafeReadableBytes { received in
            expected.withUnsafeBytes { memcmp(received.baseAddress!, $0.baseAddress!, received.count) == 0 }
        }
    }
}

/// What the slow reader saw, readable from the test.
final class TCPSlowReaderReport: Sendable {
    private let state = Mutex<(received: Int, firstMismatch: Int?)>((0, nil))
    private let steadyPeak = Mutex<Int?>(nil)
    var received: Int { state.withLock { $0.received } }
    /// The proxy's peak queue when the client had written everything, before it half-closed.
    var steadyPeakQueued: Int? { steadyPeak.withLock { $0 } }

    func recordSteadyPeak(_ bytes: Int) {
        steadyPeak.withLock { $0 = bytes }
    }

    var firstMismatch: Int? { state.withLock { $0.firstMismatch } }

    func update(received: Int, mismatch: Int?) {
        state.withLock {
            $0.received = received
            if $0.firstMismatch == nil { $0.firstMismatch = mismatch }
        }
    }

}

/// Writes `total` pattern bytes as fast as the socket takes them, then half-closes; reads one 32 KiB
/// buffer per millisecond and checks every byte; succeeds `done` at EOF.
final class TCPSlowReaderClient: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let total: Int
    private let pattern: TCPTestPattern
    private let report: TCPSlowReaderReport
    private let statistics: TCPProxyStatistics
    private let done: EventLoopPromise<Void>
    private var sent = 0
    private var received = 0
    private var mismatch: Int?
    private var ticks = 0
    private var reader: RepeatedTask?
    private var finished = false

    init(
        total: Int, pattern: TCPTestPattern, report: TCPSlowReaderReport, statistics: TCPProxyStatistics,
        done: EventLoopPromise<Void>
    ) {
        self.total = total
        self.pattern = pattern
        self.report = report
        self.statistics = statistics
        self.done = done
    }

    func channelActive(context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        reader = context.eventLoop.scheduleRepeatedTask(initialDelay: .zero, delay: .milliseconds(1)) { _ in
            let (handler, context) = loopBound.value
            handler.ticks += 1
            context.read()
        }
        writeMore(context: context)
    }

    private func writeMore(context: ChannelHandlerContext) {
        guard sent < total else { return }
        while context.channel.isWritable && sent < total {
            let count = min(64 * 1024, total - sent)
            context.write(wrapOutboundOut(ByteBuffer(bytes: pattern.slice(at: sent, count: count))), promise: nil)
            sent += count
        }
        context.flush()
        if sent == total {
            // Before the proxy sees our FIN (see the test for why that matters).
            report.recordSteadyPeak(statistics.peakQueuedBytes)
            context.close(mode: .output, promise: nil)
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        writeMore(context: context)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        if mismatch == nil && !pattern.matches(buffer, at: received) { mismatch = received }
        received += buffer.readableBytes
        report.update(received: received, mismatch: mismatch)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            finish(context: context)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(context: context)
    }

    private func finish(context: ChannelHandlerContext, error: (any Error)? = nil) {
        guard !finished else { return }
        finished = true
        reader?.cancel()
        reader = nil
        if let error {
            done.fail(error)
        } else if received == total {
            done.succeed()
        } else {
            done.fail(ChannelError.eof)
        }
        context.close(promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        finish(context: context, error: error)
    }
}
