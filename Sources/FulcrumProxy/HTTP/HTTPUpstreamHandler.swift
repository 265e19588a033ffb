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

/// How a backend's response body is delimited (RFC 9112 §6.3), decided from its head and the request.
enum HTTPResponseFraming: Equatable {
    /// No body: a response to HEAD, 1xx, 204, 304.
    case none
    case contentLength(Int)
    case chunked
    /// The body ends when the backend closes the connection.
    case untilClose
}

/// The only handler of an upstream connection's pipeline and the connection's identity: it is what the
/// per-loop pool keeps. It writes request bytes as the proxy handler prepared them and parses responses
/// in place (`HTTPResponseHeadParser`, `HTTPChunkedScanner`). While a request uses it, `owner` receives
/// the response head, body bytes and end, and flow-control signals; while idle in the pool, anything the
/// backend sends or a close removes it from the pool.
final class HTTPUpstreamHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Where the response stream is.
    private enum ResponseStream {
        /// No request outstanding.
        case idle
        case head
        case fixedBody(remaining: Int)
        case chunkedBody(HTTPChunkedScanner)
        case untilClose
    }

    let backend: Backend
    private let pool: HTTPUpstreamPool
    private var context: ChannelHandlerContext?
    /// The client connection whose request uses this connection, if any.
    var owner: HTTPProxyHandler?
    /// Requests sent on this connection; more than one means a reused keep-alive connection.
    private(set) var requestsSent = 0
    /// Body bytes of the current response so far, chunk framing not counted (byte counters, access log).
    private(set) var responseBodyBytes = 0
    private var inPool = false
    /// Idle time in the pool; closes the connection when it passes.
    private var idleDeadline: MovingDeadline?
    /// In `backend.connections`, so a forced removal can close this connection.
    private var registration: UInt64?
    private var readPending = false
    private var closed = false
    private var failure: HTTPUpstreamFailure?

    private var stream = ResponseStream.idle
    private var input: ByteBuffer?
    private var headParser = HTTPResponseHeadParser()
    /// The method of the request awaiting its response (a response to HEAD has no body).
    private var requestMethod = HTTPMethod.GET
    /// Chunked bodies go to the owner as they came (true) or as their data only (an HTTP/1.0 client).
    private var keepChunks = true

    init(backend: Backend, pool: HTTPUpstreamPool) {
        self.backend = backend
        self.pool = pool
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

    /// Writes a request head (counting it); its response is parsed next. `keepChunks`: a chunked response
    /// body is passed on with its framing (else as data only). Flushed by `flush()`.
    func send(head: ByteBuffer, method: HTTPMethod, keepChunks: Bool) {
        guard let context else { return }
        requestsSent += 1
        requestMethod = method
        self.keepChunks = keepChunks
        stream = .head
        headParser = HTTPResponseHeadParser()
        context.write(wrapOutboundOut(head), promise: nil)
    }

    /// Writes request body bytes, already framed for the backend. Flushed by `flush()`.
    func send(body: ByteBuffer) {
        context?.write(wrapOutboundOut(body), promise: nil)
    }

    func flush() {
        context?.flush()
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
        if case .untilClose = stream, let owner {
            // The close is the end of this response.
            stream = .idle
            owner.upstreamDidEnd(self, lastBody: nil)
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
        var bytes = unwrapInboundIn(data)
        guard owner != nil, !closed else {
            // A backend may send a 408 or garbage on an idle connection before closing it: never reuse it.
            rejectUnsolicited()
            return
        }
        if input == nil {
            input = bytes
        } else {
            input!.writeBuffer(&bytes)
        }
        consumeInput()
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
        if failure == nil { failure = .closed }
        close()
    }

    func read(context: ChannelHandlerContext) {
        if let owner, !owner.clientIsWritable {
            readPending = true
        } else {
            context.read()
        }
    }

    // MARK: Parsing responses

    private func rejectUnsolicited() {
        failure = .invalidResponse
        input = nil
        if inPool {
            leavePool()
            pool.remove(self)
        }
        close()
    }

    /// A response the proxy cannot pass on: the owner hears of it through the close (`didFail`, which
    /// answers 502 or, once the response started, closes the client connection). `reason` is for debugging.
    private func invalidResponse(_ reason: String) {
        failure = .invalidResponse
        input = nil
        stream = .idle
        close()
    }

    private func consumeInput() {
        while let owner, var buffer = input {
            guard buffer.readableBytes > 0 else {
                input = nil
                return
            }
            switch stream {
            case .idle:
                // Bytes after a complete response, before any request: the connection is out of step.
                rejectUnsolicited()
                return
            case .head:
                switch headParser.parse(buffer) {
                case .incomplete:
                    return
                case .invalid(let reason):
                    invalidResponse(reason)
                    return
                case .complete(let head, let length):
                    buffer.moveReaderIndex(forwardBy: length)
                    input = buffer.readableBytes > 0 ? buffer : nil
                    if head.status >= 100 && head.status < 200 && head.status != 101 {
                        continue  // interim responses are dropped (Fulcrum answers 100-continue itself)
                    }
                    guard let framing = framing(of: head) else {
                        invalidResponse("ambiguous response framing")
                        return
                    }
                    let keepAlive: Bool
                    if framing == .untilClose {
                        keepAlive = false
                    } else {
                        let connection = head.connectionOptions
                        keepAlive = head.version.minor >= 1 ? !connection.close : connection.keepAlive
                    }
                    responseBodyBytes = 0
                    switch framing {
                    case .none, .contentLength(0): stream = .idle
                    case .contentLength(let length): stream = .fixedBody(remaining: length)
                    case .chunked: stream = .chunkedBody(HTTPChunkedScanner())
                    case .untilClose: stream = .untilClose
                    }
                    owner.upstream(self, didReceiveHead: head, framing: framing, keepAlive: keepAlive)
                    if case .idle = stream, self.owner === owner { finishResponse(owner) }
                }
            case .fixedBody(let remaining):
                let count = min(remaining, buffer.readableBytes)
                let body = buffer.readSlice(length: count)!
                input = buffer.readableBytes > 0 ? buffer : nil
                responseBodyBytes += count
                if count == remaining {
                    stream = .idle
                    finishResponse(owner, lastBody: body)
                } else {
                    stream = .fixedBody(remaining: remaining - count)
                    owner.upstream(self, didReceiveBody: body)
                }
            case .chunkedBody(var scanner):
                var data: [ByteBuffer] = []
                let outcome = buffer.withUnsafeReadableBytes { raw in
                    keepChunks
                        ? scanner.scan(raw)
                        : scanner.scan(raw) { range in
                            data.append(
                                buffer.getSlice(at: buffer.readerIndex + range.lowerBound, length: range.count)!)
                        }
                }
                switch outcome {
                case .invalid(let rejection):
                    invalidResponse(rejection.message)
                    return
                case .body(let count, let ended):
                    let body = buffer.readSlice(length: count)!
                    input = buffer.readableBytes > 0 ? buffer : nil
                    stream = ended ? .idle : .chunkedBody(scanner)
                    responseBodyBytes = scanner.dataBytes
                    if keepChunks {
                        if ended {
                            finishResponse(owner, lastBody: body)
                        } else {
                            owner.upstream(self, didReceiveBody: body)
                        }
                    } else {
                        for part in data where self.owner === owner { owner.upstream(self, didReceiveBody: part) }
                        if ended, self.owner === owner { finishResponse(owner) }
                    }
                }
            case .untilClose:
                input = nil
                responseBodyBytes += buffer.readableBytes
                owner.upstream(self, didReceiveBody: buffer)
            }
        }
    }

    /// The response is complete, `lastBody` being its last bytes (passed with the end, so the client's
    /// last write can carry them). Bytes after it would be read as the next request's response: such a
    /// connection is not reused.
    private func finishResponse(_ owner: HTTPProxyHandler, lastBody: ByteBuffer? = nil) {
        if let input, input.readableBytes > 0 {
            failure = .invalidResponse
            self.input = nil
        }
        owner.upstreamDidEnd(self, lastBody: lastBody)
    }

    /// The body framing of a final response, or nil when the head is ambiguous (an invalid or
    /// conflicting Content-Length without Transfer-Encoding).
    private func framing(of head: HTTPParsedResponseHead) -> HTTPResponseFraming? {
        if requestMethod == .HEAD || head.status < 200 || head.status == 204 || head.status == 304 {
            return HTTPResponseFraming.none
        }
        if head.known.contains(.transferEncoding) {
            let transferEncoding = head.values("transfer-encoding")
            // Transfer-Encoding overrides Content-Length; a body not chunked last runs until the close.
            let codings = HTTPRequestFraming.tokens(transferEncoding)
            return codings.last?.lowercased() == "chunked" ? .chunked : .untilClose
        }
        switch head.contentLength {
        case .absent: return .untilClose
        case .value(let length): return .contentLength(length)
        case .invalid: return nil
        }
    }
}

@available(*, unavailable)
extension HTTPUpstreamHandler: Sendable {}
