import FulcrumCore
import Logging
import NIOCore

/// One side of a TCP flow: relays what its channel reads to the partner's channel, byte for byte.
/// Both channels live on one event loop, so the pair shares plain state and needs no lock.
///
/// - Backpressure: a side reads only while the partner's channel is writable; when the partner drains,
///   it asks the paused side to read again (as in NIO's connect-proxy `GlueHandler`).
/// - Half-close: end of input on one side shuts down the partner's output once its queued bytes are
///   written; the other direction keeps flowing until it ends too.
/// - A side that closes lets the partner finish writing what it holds, then closes it (bounded by
///   `lingerTimeout`); an error or an idle timeout closes both at once.
/// - Idle timeout: the client side's `MovingDeadline`, moved on every read from and write to the client,
///   rather than NIO's `IdleStateHandler`, which schedules a task per connection and adds a promise to
///   every write to learn when it completes.
final class TCPGlueHandler {
    /// The most a side buffers before it has a partner (NIO reads a peer's FIN, and the bytes before it,
    /// even while no read was asked for); beyond this the connection is closed.
    static let earlyInputLimit = 1 << 20

    private var partner: TCPGlueHandler?
    private var context: ChannelHandlerContext?
    /// True on the client's side: its reads are client bytes.
    private let isClientSide: Bool
    private let statistics: TCPProxyStatistics?
    private var logger: Logger
    private var lingerTimeout: TimeAmount
    /// Client side only: no bytes either way for this long closes the flow.
    private let idleTimeout: TimeAmount?
    private var idleDeadline: MovingDeadline?
    /// Not yet glued to a partner: reads are held back and anything that arrives anyway is kept.
    private var attached = false
    private var early: [ByteBuffer] = []
    private var earlyBytes = 0
    /// `read()` was held back (no partner yet, or the partner could not take more).
    private var pendingRead = false
    /// Our peer will send nothing more.
    private var inputClosed = false
    /// We started ending our output (half-close or finish-and-close); nothing more is relayed to it.
    private var outputEnding = false
    private var outputClosed = false
    private var finishing = false
    /// The flow's backend, once glued: this side's reads are added to its byte counters.
    private var backend: Backend?
    /// Bytes this side read from its peer and relayed (client side: from the client; upstream side:
    /// from the backend). For the access log.
    private(set) var relayedBytes: UInt64 = 0

    /// A side that waits for its partner: add it to the pipeline at once, so nothing is read, or lost,
    /// before `glue(client:upstream:)`. `idleTimeout` (for the client side) runs from when the channel is
    /// active.
    init(
        isClientSide: Bool, statistics: TCPProxyStatistics?, logger: Logger, lingerTimeout: TimeAmount,
        idleTimeout: TimeAmount? = nil
    ) {
        self.isClientSide = isClientSide
        self.statistics = statistics
        self.logger = logger
        self.lingerTimeout = lingerTimeout
        self.idleTimeout = idleTimeout
    }

    /// Starts relaying between two waiting sides: passes on what each kept, then lets both read.
    static func glue(client: TCPGlueHandler, upstream: TCPGlueHandler, backend: Backend? = nil) {
        client.backend = backend
        upstream.backend = backend
        upstream.lingerTimeout = client.lingerTimeout
        client.partner = upstream
        upstream.partner = client
        client.attached = true
        upstream.attached = true
        client.releaseEarlyInput()
        upstream.releaseEarlyInput()
        // A side that closed while waiting (a backend that greets and hangs up) has no handler context any more.
        // (Two calls, not a loop over an array of pairs: that array would be allocated for every flow.)
        detachIfClosed(client, from: upstream)
        detachIfClosed(upstream, from: client)
    }

    private static func detachIfClosed(_ side: TCPGlueHandler, from other: TCPGlueHandler) {
        guard side.context?.channel.isActive != true else { return }
        side.partner = nil
        if other.partner === side { other.partnerGone() }
    }

    var currentLogger: Logger { logger }

    /// Metadata for this flow's debug messages: the side, and the backend once glued. Built only when a
    /// message is logged (setting it on the logger would copy its metadata for every flow).
    private func flowMetadata(_ extra: Logger.Metadata = [:]) -> Logger.Metadata {
        var metadata = extra
        metadata["side"] = .string(isClientSide ? "client" : "backend")
        if let backend { metadata["backend.address"] = .string(backend.name) }
        return metadata
    }

    private func releaseEarlyInput() {
        guard let partner else { return }
        let kept = early
        early = []
        earlyBytes = 0
        for buffer in kept {
            countRelayed(buffer.readableBytes)
            partner.send(buffer)
        }
        if !kept.isEmpty { partner.flush() }
        if inputClosed {
            partner.endOutput()
        } else if pendingRead, partner.isWritable, let context {
            pendingRead = false
            context.read()
        }
    }

    private func countRelayed(_ bytes: Int) {
        relayedBytes &+= UInt64(bytes)
        statistics?.relayed(bytes, fromClient: isClientSide)
        if isClientSide {
            backend?.stats.recordBytes(sent: bytes, received: 0)
        } else {
            backend?.stats.recordBytes(sent: 0, received: bytes)
        }
    }

    // MARK: Called by the partner

    private var isWritable: Bool { context?.channel.isWritable ?? true }

    private func send(_ buffer: ByteBuffer) {
        guard let context, !outputEnding else { return }
        if let idleTimeout { idleDeadline?.set(in: idleTimeout) }
        context.write(wrapOutboundOut(buffer), promise: nil)
        if let statistics, let queued = try? context.channel.syncOptions?.getOption(.bufferedWritableBytes) {
            statistics.queued(queued)
        }
    }

    private func flush() {
        context?.flush()
    }

    private func resumeReading() {
        guard pendingRead, let context else { return }
        pendingRead = false
        context.read()
    }

    /// The partner's peer sent FIN: pass it on once what is queued here is written.
    private func endOutput() {
        guard !outputEnding, let context else { return }
        if inputClosed {
            // Both directions are now over. NIO turns an output shutdown on a channel whose input is
            // closed into a full close that drops queued writes, so write them out first.
            finishAndClose()
            return
        }
        outputEnding = true
        let channel = context.channel
        let shutdown = context.eventLoop.makePromise(of: Void.self)
        context.close(mode: .output, promise: shutdown)
        shutdown.futureResult.whenFailure { _ in channel.close(promise: nil) }
    }

    /// The partner's channel is gone: nothing more will be relayed here. Write out what is queued, then close.
    private func partnerGone() {
        partner = nil
        // Keep reading (and discarding) so the peer's close is noticed.
        if pendingRead, let context {
            pendingRead = false
            context.read()
        }
        finishAndClose()
    }

    private func finishAndClose() {
        guard !finishing, let context else { return }
        finishing = true
        outputEnding = true
        let channel = context.channel
        // Writes complete in order: this empty one completes once everything before it is written.
        let written = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(capacity: 0)), promise: written)
        let linger = context.eventLoop.scheduleTask(in: lingerTimeout) { channel.close(promise: nil) }
        written.futureResult.whenComplete { _ in
            linger.cancel()
            channel.close(promise: nil)
        }
    }

    private func closeNow() {
        context?.close(promise: nil)
    }

    private func closeFlow() {
        let partner = self.partner
        closeNow()
        partner?.closeNow()
    }

    private func closeIfDone(context: ChannelHandlerContext) {
        if inputClosed && outputClosed { context.close(promise: nil) }
    }
}

extension TCPGlueHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if let idleTimeout {
            idleDeadline = MovingDeadline(eventLoop: context.eventLoop) { [self] in
                logger.debug("closing idle TCP flow", metadata: flowMetadata())
                closeFlow()
            }
            if context.channel.isActive { idleDeadline?.set(in: idleTimeout) }
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        idleDeadline?.cancel()
        self.context = nil
        partner = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        if let idleTimeout { idleDeadline?.set(in: idleTimeout) }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        if let idleTimeout { idleDeadline?.set(in: idleTimeout) }
        guard attached else {
            early.append(buffer)
            earlyBytes += buffer.readableBytes
            if earlyBytes > Self.earlyInputLimit {
                logger.debug(
                    "closing connection: too much input before the other side connected", metadata: flowMetadata())
                context.close(promise: nil)
            }
            return
        }
        guard let partner else { return }  // the other side is gone: nowhere to relay to
        countRelayed(buffer.readableBytes)
        partner.send(buffer)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        partner?.flush()
    }

    func read(context: ChannelHandlerContext) {
        if !attached {
            pendingRead = true
        } else if let partner, !partner.isWritable {
            pendingRead = true
            statistics?.readPaused()
        } else {
            context.read()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            partner?.resumeReading()
        }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case ChannelEvent.inputClosed:
            inputClosed = true
            partner?.endOutput()
            closeIfDone(context: context)
        case ChannelEvent.outputClosed:
            outputClosed = true
            closeIfDone(context: context)
        case is ListenerDrainEvent:
            // A TCP flow has no request boundary to stop at: it goes on until the drain grace ends.
            break
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        idleDeadline?.cancel()
        inputClosed = true
        outputClosed = true
        if let partner {
            self.partner = nil
            partner.partnerGone()
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("closing TCP flow after an error", metadata: flowMetadata(["error": .string("\(error)")]))
        closeFlow()
    }
}

@available(*, unavailable)
extension TCPGlueHandler: Sendable {}
