import FulcrumCore
import NIOCore
import NIOHTTP1

/// Why an upstream connection stopped before its response was complete.
enum HTTPUpstreamFailure: Equatable {
    /// The backend closed or reset the connection.
    case closed
    /// The backend sent something that is not an HTTP/1.1 response (or headers over the limits).
    case invalidResponse
}

/// The last handler of an upstream connection's pipeline and the connection's identity: it is what the
/// per-loop pool keeps. While a request uses it, `owner` receives the response parts and flow-control
/// signals; while idle in the pool, anything the backend sends or a close removes it from the pool.
final class HTTPUpstreamHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = ByteBuffer

    let backend: Backend
    private let pool: HTTPUpstreamPool
    private var context: ChannelHandlerContext?
    /// The client connection whose request uses this connection, if any.
    var owner: HTTPProxyHandler?
    /// Requests sent on this connection; more than one means a reused keep-alive connection.
    private(set) var requestsSent = 0
    private var inPool = false
    /// Idle time in the pool; closes the connection when it passes.
    private var idleDeadline: MovingDeadline?
    /// In `backend.connections`, so a forced removal can close this connection.
    private var registration: UInt64?
    private var readPending = false
    private var closed = false
    private var failure: HTTPUpstreamFailure?

    /// Requests are written as bytes at the head of the pipeline, past the response decoder (which
    /// learns each request's method from `send(head:method:)`, so a response to HEAD has no body).
    private let writer: HTTPUpstreamWriter
    private let decoder: HTTPResponseDecoder

    init(backend: Backend, pool: HTTPUpstreamPool, writer: HTTPUpstreamWriter, decoder: HTTPResponseDecoder) {
        self.backend = backend
        self.pool = pool
        self.writer = writer
        self.decoder = decoder
    }

    /// Open, not failed: may carry a request.
    var isUsable: Bool { !closed && failure == nil && (context?.channel.isActive ?? false) }
    var isWritable: Bool { context?.channel.isWritable ?? false }

    // MARK: Used by the pool and the owner

    func enterPool(timeout: TimeAmount) {
        inPool = true
        owner = nil
        idleDeadline?.set(in: timeout)
        // Keep reading while idle, so a backend's close is noticed at once.
        resumeReading()
    }

    func leavePool() {
        inPool = false
        idleDeadline?.clear()
    }

    /// Writes a request head (counting it). Flushed by `flush()`.
    func send(head: ByteBuffer, method: HTTPMethod) {
        guard context != nil else { return }
        requestsSent += 1
        decoder.write(data: .head(HTTPRequestHead(version: .http1_1, method: method, uri: "")))
        writer.write(head)
    }

    /// Writes request body bytes, already framed for the backend. Flushed by `flush()`.
    func send(body: ByteBuffer) {
        guard context != nil else { return }
        writer.write(body)
    }

    func flush() {
        writer.flush()
    }

    func close() {
        guard !closed, let context else { return }
        closed = true
        context.close(promise: nil)
    }

    /// Reads again after the owner's client became writable.
    func resumeReading() {
        guard readPending, let context else { return }
        readPending = false
        context.read()
    }

    // MARK: ChannelHandler

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        let channel = context.channel
        registration = backend.connections.register { channel.close(promise: nil) }
        idleDeadline = MovingDeadline(eventLoop: context.eventLoop) { [self] in
            guard inPool else { return }
            pool.remove(self)
            close()
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        idleDeadline?.cancel()
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed = true
        idleDeadline?.cancel()
        if let registration { backend.connections.unregister(registration) }
        registration = nil
        if inPool {
            leavePool()
            pool.remove(self)
        }
        if owner != nil {
            // Delivered from a fresh stack: the owner may be in the middle of writing to this connection.
            let failure = self.failure ?? .closed
            context.eventLoop.assumeIsolated().execute { [self] in
                owner?.upstream(self, didFail: failure)
            }
        }
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        guard let owner else {
            // A backend may send a 408 or garbage on an idle connection before closing it: never reuse it.
            failure = .invalidResponse
            if inPool {
                leavePool()
                pool.remove(self)
            }
            close()
            return
        }
        owner.upstream(self, didReceive: part)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        owner?.upstreamReadComplete(self)
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        owner?.upstreamWritabilityChanged(self)
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if failure == nil {
            failure = error is HTTPParserError ? .invalidResponse : .closed
        }
        close()
    }

    func read(context: ChannelHandlerContext) {
        if let owner, !owner.clientIsWritable {
            readPending = true
        } else {
            context.read()
        }
    }
}

@available(*, unavailable)
extension HTTPUpstreamHandler: Sendable {}

/// The first handler of an upstream pipeline: `HTTPUpstreamHandler` writes request bytes through its
/// context, so they go straight to the socket (the response decoder's outbound side expects typed parts).
final class HTTPUpstreamWriter: ChannelOutboundHandler {
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var context: ChannelHandlerContext?

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func write(_ bytes: ByteBuffer) {
        context?.write(wrapOutboundOut(bytes), promise: nil)
    }

    func flush() {
        context?.flush()
    }
}

@available(*, unavailable)
extension HTTPUpstreamWriter: Sendable {}
