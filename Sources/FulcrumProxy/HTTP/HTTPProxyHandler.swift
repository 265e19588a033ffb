import FulcrumConfig
import FulcrumCore
import Logging
import NIOCore
import NIOHTTP1
import Synchronization

/// The client side of one HTTP/1.1 connection, and its only handler: parses each request from the
/// client's bytes, validates it, picks a backend per request, sends it over a pooled or new upstream
/// connection on the same event loop and streams both bodies with backpressure. One request is served at
/// a time; the bytes of pipelined requests wait in `input` (and reading stops) until the current
/// response is complete.
final class HTTPProxyHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    /// Responses are framed here (`HTTPWire`): there is no response encoder in the client pipeline.
    typealias OutboundOut = ByteBuffer

    /// Where the client's byte stream is: before a head, or inside a body.
    private enum RequestStream {
        case head
        case fixedBody(remaining: Int)
        case chunkedBody(HTTPChunkedScanner)
    }

    private let route: ListenerRoute
    private let logger: Logger
    private var reader: PoolReader
    private let upstreams: HTTPUpstreamPool
    private let client: IPAddress?
    private let forwarding: HTTPHeaderRewriter.ForwardingElements?
    private let sourceHash: UInt64
    private let connectTimeout: TimeAmount
    private let idleTimeout: TimeAmount
    private let headerTimeout: TimeAmount
    private let responseTimeout: TimeAmount

    private var context: ChannelHandlerContext?
    private var exchange: HTTPExchange?
    /// Client bytes not yet consumed: a partial head, or what follows a request whose response is pending.
    private var input: ByteBuffer?
    private var stream = RequestStream.head
    private var headParser = HTTPRequestHeadParser()
    /// The client closed its side while `input` still held a request to serve first.
    private var inputClosedPending = false
    /// The next byte from the client starts a request (ends the idle wait).
    private var awaitingRequest = true
    private var inRead = false
    private var readPending = false
    /// No further requests: the connection closes once the current output is written.
    private var closing = false
    private var draining = false
    private var requestBytesSeen = false
    /// The connection's one timer. Without a current exchange it is the wait timer: the idle wait between
    /// requests, then the request-header timeout (`startWaitTimer`). With one, it is the response timer,
    /// from the last request byte sent to the response head (`startResponseTimer`). The two never run at
    /// once (an exchange starts by clearing the wait and ends by clearing the response timer), so one
    /// deadline serves both: one object and one scheduler slot per connection instead of two.
    private var deadline: MovingDeadline?
    /// A request was answered on this connection (later ones get the idle timeout first).
    private var hadRequest = false
    /// The client's address and port, for the access log (NIO forgets it when the channel closes).
    private var clientAddress: SocketAddress?

    init(
        route: ListenerRoute, logger: Logger, upstreams: HTTPUpstreamPool, client: IPAddress?
    ) {
        self.route = route
        self.logger = logger
        self.reader = PoolReader(route.pool)
        self.upstreams = upstreams
        self.client = client
        self.forwarding = client.map(HTTPHeaderRewriter.ForwardingElements.init(client:))
        self.sourceHash = client.map { StableHash.hash($0) } ?? 0
        let timeouts = route.timeouts
        connectTimeout = timeouts.connect
        idleTimeout = timeouts.idle
        headerTimeout = timeouts.requestHeaders
        responseTimeout = timeouts.response
    }

    /// Whether the client can take more response bytes (the upstream stops reading otherwise).
    var clientIsWritable: Bool { context?.channel.isWritable ?? false }

    // MARK: ChannelHandler

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        clientAddress = context.channel.remoteAddress
        deadline = MovingDeadline(eventLoop: context.eventLoop) { [self] in
            if exchange == nil { waitDeadlinePassed() } else { responseDeadlinePassed() }
        }
        if context.channel.isActive { startWaitTimer() }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        if exchange == nil && !(deadline?.isSet ?? true) { startWaitTimer() }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        closing = true
        deadline?.cancel()
        if let exchange {
            // The client went away: whatever the backend was doing for it is no longer wanted.
            abandon(exchange)
        }
        input = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        inRead = true
        guard !closing else { return }
        var bytes = unwrapInboundIn(data)
        guard bytes.readableBytes > 0 else { return }
        if awaitingRequest {
            awaitingRequest = false
            requestBytesArrived()
        }
        if input == nil {
            input = bytes
        } else {
            input!.writeBuffer(&bytes)
        }
        consumeInput()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        inRead = false
        dispatchIfReady()
        if let exchange, exchange.upstreamNeedsFlush {
            exchange.upstreamNeedsFlush = false
            exchange.upstream?.flush()
        }
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { exchange?.upstream?.resumeReading() }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case is ListenerDrainEvent:
            draining = true
            if exchange == nil { closeNow() }
        case ChannelEvent.inputClosed:
            if acceptsInput {
                handleInputClosed()
            } else {
                inputClosedPending = true
            }
        default:
            break
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard !closing else { return }
        logger.debug("client connection error", metadata: ["error": "\(error)"])
        closeNow()
    }

    func read(context: ChannelHandlerContext) {
        if shouldReadClient {
            context.read()
        } else {
            readPending = true
        }
    }

    // MARK: Reading the client

    /// Input belongs to the current request (or starts a new one) rather than waiting in `input`.
    private var acceptsInput: Bool {
        guard let exchange else { return true }
        return !exchange.requestEnded
    }

    private var shouldReadClient: Bool {
        // Bytes held for the next request: read no more until it is its turn.
        guard !closing, input == nil || acceptsInput else { return false }
        guard let exchange else { return true }
        switch exchange.phase {
        case .received, .connecting, .finished: return false
        case .attached: return exchange.requestEnded || (exchange.upstream?.isWritable ?? true)
        }
    }

    private func resumeClientReading() {
        guard readPending, shouldReadClient, let context else { return }
        readPending = false
        context.read()
    }

    /// Parses and passes on as much of `input` as belongs to the current request (or starts the next one
    /// when none is current). Body bytes are forwarded as they came, once their framing is checked.
    private func consumeInput() {
        while !closing, acceptsInput, var buffer = input {
            guard buffer.readableBytes > 0 else {
                input = nil
                return
            }
            switch stream {
            case .head:
                switch headParser.parse(buffer) {
                case .incomplete:
                    return
                case .invalid(let rejection):
                    input = nil
                    logger.debug("refusing malformed request", metadata: ["error": "\(rejection.message)"])
                    reject(rejection, version: .http1_1)
                    return
                case .complete(let head, let length):
                    buffer.moveReaderIndex(forwardBy: length)
                    input = buffer.readableBytes > 0 ? buffer : nil
                    receiveHead(head)
                }
            case .fixedBody(let remaining):
                let count = min(remaining, buffer.readableBytes)
                let body = buffer.readSlice(length: count)!
                input = buffer.readableBytes > 0 ? buffer : nil
                stream = count == remaining ? .head : .fixedBody(remaining: remaining - count)
                exchange?.requestBytes += count
                receiveBody(body)
                if count == remaining { receiveEnd() }
            case .chunkedBody(var scanner):
                let outcome = buffer.withUnsafeReadableBytes { scanner.scan($0) }
                switch outcome {
                case .invalid(let rejection):
                    input = nil
                    logger.debug("refusing malformed request", metadata: ["error": "\(rejection.message)"])
                    reject(rejection, version: exchange?.version ?? .http1_1)
                    return
                case .body(let count, let ended):
                    let body = buffer.readSlice(length: count)!
                    input = buffer.readableBytes > 0 ? buffer : nil
                    stream = ended ? .head : .chunkedBody(scanner)
                    exchange?.requestBytes = scanner.dataBytes
                    receiveBody(body)
                    if ended { receiveEnd() }
                }
            }
        }
    }

    private func receiveBody(_ body: ByteBuffer) {
        guard body.readableBytes > 0, let exchange, !exchange.requestEnded else { return }
        switch exchange.phase {
        case .received, .connecting:
            exchange.pendingBody.append(body)
        case .attached:
            exchange.lastProgress = .now()
            exchange.upstream?.send(body: body)
            exchange.bodyForwarded = true
            exchange.upstreamNeedsFlush = true
        case .finished:
            break
        }
    }

    private func receiveEnd() {
        guard let exchange, !exchange.requestEnded else { return }
        exchange.requestEnded = true
        if exchange.phase == .attached {
            exchange.upstreamNeedsFlush = false
            exchange.lastProgress = .now()
            exchange.upstream?.flush()
        }
    }

    private func receiveHead(_ head: HTTPParsedRequestHead) {
        deadline?.clear()  // the wait timer; the response timer starts once the request is sent
        requestBytesSeen = false
        let framing: HTTPRequestFraming
        switch HTTPRequestFraming.validate(
            version: head.version, method: head.method,
            transferEncoding: head.known.contains(.transferEncoding) ? head.values("transfer-encoding") : [],
            contentLength: head.contentLength)
        {
        case .success(let valid): framing = valid
        case .failure(let rejection):
            reject(rejection, version: head.version)
            return
        }
        var expectsContinue = false
        for expect in head.known.contains(.expect) ? head.values("expect") : [] {
            guard expect.lowercased() == "100-continue" else {
                reject(HTTPRejection(.expectationFailed, "unsupported Expect"), version: head.version)
                return
            }
            expectsContinue = true
        }
        let connection = head.connectionOptions
        let keepAlive = head.version.minor >= 1 ? !connection.close : connection.keepAlive
        let snapshot = reader.snapshot()
        let now = MonotonicClock.now()
        let key = PickKey(
            hash: HTTPHeaderRewriter.keyHash(route.hashKey, head: head, sourceHash: sourceHash), now: now)
        var sticky: Backend?
        if let cookie = route.config.stickyCookie, let value = HTTPHeaderRewriter.cookie(cookie.name, in: head) {
            sticky = StickyCookie.backend(named: value, in: snapshot)
        }
        var upstreamHead = context?.channel.allocator.buffer(capacity: 0) ?? ByteBuffer()
        HTTPHeaderRewriter.writeUpstreamHead(
            head, framing: framing, connectionTokens: connection.fieldNames, client: forwarding, into: &upstreamHead)
        exchange = HTTPExchange(
            method: head.method, version: head.version, keepAlive: keepAlive, expectsContinue: expectsContinue,
            upstreamHead: upstreamHead, snapshot: snapshot, key: key, stickyBackend: sticky,
            retries: route.config.retries)
        if route.accessLog != nil { exchange?.uri = head.target }
        switch framing {
        case .none, .contentLength(0):
            receiveEnd()
        case .contentLength(let length):
            stream = .fixedBody(remaining: length)
        case .chunked:
            stream = .chunkedBody(HTTPChunkedScanner())
        }
    }

    /// Dispatches a request whose head arrived in a read that is now complete.
    private func dispatchIfReady() {
        guard !inRead, let exchange, exchange.phase == .received else { return }
        dispatch(exchange)
    }

    // MARK: Choosing a backend and a connection

    private func dispatch(_ exchange: HTTPExchange) {
        let backend: Backend
        if let preferred = exchange.preferred {
            exchange.preferred = nil
            backend = preferred
        } else if let picked = exchange.snapshot.pick(exchange.key, excluding: exchange.tried) {
            backend = picked
        } else {
            fail(exchange, exchange.lastFailure ?? HTTPRejection(.serviceUnavailable, "no backend available"))
            return
        }
        if !exchange.forceFreshConnection, let connection = upstreams.take(backend) {
            attach(exchange, to: connection)
            return
        }
        exchange.forceFreshConnection = false
        exchange.phase = .connecting
        exchange.attempt += 1
        let attempt = exchange.attempt
        upstreams.connect(to: backend, timeout: connectTimeout) { [self] result in
            guard self.exchange === exchange, exchange.phase == .connecting, exchange.attempt == attempt else {
                // The request is gone (client error or close): the fresh connection serves a later one.
                if case .success(let connection) = result { upstreams.release(connection) }
                return
            }
            switch result {
            case .success(let connection):
                attach(exchange, to: connection)
            case .failure(let error):
                route.pool.reportOutcome(backend, success: false, now: MonotonicClock.now())
                logger.debug(
                    "backend connect failed",
                    metadata: ["backend.address": "\(backend.endpoint)", "error": "\(error)"])
                exchange.tried.append(backend)
                exchange.lastFailure = Self.rejection(for: error)
                // Nothing was sent: a failed connect is retried for every method.
                if exchange.retriesLeft > 0 {
                    exchange.retriesLeft -= 1
                    dispatch(exchange)
                } else {
                    fail(exchange, exchange.lastFailure!)
                }
            }
        }
    }

    private func attach(_ exchange: HTTPExchange, to upstream: HTTPUpstreamHandler) {
        exchange.phase = .attached
        exchange.upstream = upstream
        exchange.backend = upstream.backend
        upstream.owner = self
        // Load is what a request holds: an upstream connection in use (idle pooled ones do not count,
        // as in nginx), so least-connections and bounded-load see the same thing in L4 and L7.
        upstream.backend.connectionOpened()
        upstream.backend.requestStarted()
        exchange.inFlight = true
        exchange.sentAt = MonotonicClock.now()
        exchange.lastProgress = .now()
        upstream.send(head: exchange.upstreamHead, method: exchange.method, keepChunks: exchange.version.minor >= 1)
        for body in exchange.pendingBody {
            upstream.send(body: body)
            exchange.bodyForwarded = true
        }
        exchange.pendingBody.removeAll()
        exchange.upstreamNeedsFlush = false
        if exchange.expectsContinue && !exchange.requestEnded && !exchange.bodyForwarded && !exchange.continueSent {
            // Fulcrum answers 100-continue itself once a backend is ready (and removed Expect upstream).
            exchange.continueSent = true
            if let context {
                var buffer = context.channel.allocator.buffer(capacity: 32)
                HTTPWire.writeResponseHead(
                    &buffer, version: exchange.version, status: .continue, headers: HTTPHeaders())
                context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
            }
        }
        startResponseTimer(after: responseTimeout)
        upstream.flush()
        resumeClientReading()
    }

    /// Gives up on the current exchange without answering it: its upstream connection is closed (the
    /// backend may be mid-response) and its statistics say nothing about the backend.
    private func abandon(_ exchange: HTTPExchange) {
        exchange.logAccess(route, client: clientAddress, outcome: .aborted)
        exchange.phase = .finished
        if let upstream = exchange.upstream {
            detach(exchange)
            upstream.close()
        }
        abandonStats(exchange)
        self.exchange = nil
    }

    /// Unlinks the exchange and its upstream connection (the caller pools or closes the connection).
    private func detach(_ exchange: HTTPExchange) {
        exchange.upstream?.owner = nil
        exchange.upstream = nil
        deadline?.clear()  // the response timer
    }

    // MARK: The response

    /// The exchange `upstream` serves, or nil (then the connection is of no further use and is closed).
    private func current(_ upstream: HTTPUpstreamHandler) -> HTTPExchange? {
        guard let exchange, exchange.upstream === upstream else {
            upstream.owner = nil
            upstream.close()
            return nil
        }
        return exchange
    }

    func upstream(
        _ upstream: HTTPUpstreamHandler, didReceiveHead head: HTTPParsedResponseHead, framing: HTTPResponseFraming,
        keepAlive upstreamKeepAlive: Bool
    ) {
        guard let exchange = current(upstream) else { return }
        guard !exchange.responseStarted, head.status != 101 else {
            // Upgrade was removed from the request, so a 101 (or a second head) is a broken backend.
            detach(exchange)
            upstream.close()
            upstreamFailed(exchange, upstream: upstream, failure: .invalidResponse)
            return
        }
        deadline?.clear()  // the response timer
        let now = MonotonicClock.now()
        exchange.latencyNanos = now > exchange.sentAt ? now - exchange.sentAt : 0
        exchange.responseStatus = HTTPResponseStatus(statusCode: head.status)
        exchange.upstreamKeepAlive = upstreamKeepAlive

        // The body is framed for this client: a length stays; chunks pass to an HTTP/1.1 client as they
        // came and reach an HTTP/1.0 one unwrapped (`keepChunks` at send), ending with the connection; a
        // body that ends with the backend's close gets chunks for an HTTP/1.1 client.
        let version = exchange.version
        var keepAlive = exchange.clientKeepAlive && !draining && !closing
        var chunked = false
        var keepContentLength = true
        switch framing {
        case .none, .contentLength:
            break
        case .chunked, .untilClose:
            // Transfer-Encoding overrides a Content-Length: the backend's is not passed on.
            keepContentLength = false
            if version.minor == 0 {
                keepAlive = false
            } else {
                chunked = true
                exchange.responseChunked = framing == .untilClose
            }
        }
        exchange.clientKeepAlive = keepAlive
        var setCookie: String?
        if let sticky = route.config.stickyCookie, sticky.insert, exchange.stickyBackend !== upstream.backend {
            setCookie = StickyCookie.setCookie(sticky, backend: upstream.backend)
        }
        exchange.responseStarted = true
        guard let context else { return }
        var buffer = context.channel.allocator.buffer(capacity: head.bytes.readableBytes + 256)
        HTTPHeaderRewriter.writeClientResponseHead(
            head, version: version, keepContentLength: keepContentLength,
            setCookie: setCookie,
            connection: !keepAlive ? .close : version.minor == 0 ? .keepAlive : nil, chunked: chunked, into: &buffer)
        // Held until the body's first bytes (or the end, or the read's end): a small body then leaves in
        // the same buffer, one write instead of a vector of two.
        exchange.heldResponseHead = buffer
        exchange.clientNeedsFlush = true
    }

    /// Writes the held response head, with `body` appended when that is small.
    private func writeHeldHead(
        _ exchange: HTTPExchange, context: ChannelHandlerContext, appending body: inout ByteBuffer?
    ) {
        guard var head = exchange.heldResponseHead else { return }
        exchange.heldResponseHead = nil
        if let small = body, small.readableBytes <= 2048 {
            head.writeImmutableBuffer(small)
            body = nil
        }
        context.write(wrapOutboundOut(head), promise: nil)
    }

    func upstream(_ upstream: HTTPUpstreamHandler, didReceiveBody body: ByteBuffer) {
        guard let exchange = current(upstream) else { return }
        guard exchange.responseStarted, let context, body.readableBytes > 0 else { return }
        exchange.responseBytes = upstream.responseBodyBytes
        if exchange.heldResponseHead != nil {
            var rest: ByteBuffer? = exchange.responseChunked ? nil : body
            writeHeldHead(exchange, context: context, appending: &rest)
            exchange.clientNeedsFlush = true
            if !exchange.responseChunked && rest == nil { return }
        }
        if exchange.responseChunked {
            var header = context.channel.allocator.buffer(capacity: 24)
            if exchange.chunkOpen { header.writeStaticString("\r\n") }
            HTTPWire.writeChunkHeader(&header, size: body.readableBytes)
            context.write(wrapOutboundOut(header), promise: nil)
            exchange.chunkOpen = true
        }
        context.write(wrapOutboundOut(body), promise: nil)
        exchange.clientNeedsFlush = true
    }

    /// The response is complete; `lastBody`, if any, are its last bytes. What is still to write (the held
    /// head, those bytes, the last chunk) goes out in as few buffers as their sizes allow.
    func upstreamDidEnd(_ upstream: HTTPUpstreamHandler, lastBody: ByteBuffer?) {
        guard let exchange = current(upstream) else { return }
        guard exchange.responseStarted, let context else { return }
        if let lastBody, exchange.responseChunked {
            // Only a body without a length gets chunks from the proxy, and that one ends with a close.
            self.upstream(upstream, didReceiveBody: lastBody)
        }
        exchange.responseEnded = true
        exchange.clientNeedsFlush = false
        var pending = exchange.heldResponseHead
        exchange.heldResponseHead = nil
        func add(_ piece: ByteBuffer) {
            guard piece.readableBytes > 0 else { return }
            if var merged = pending, piece.readableBytes <= 2048 {
                merged.writeImmutableBuffer(piece)
                pending = merged
            } else {
                if let pending { context.write(wrapOutboundOut(pending), promise: nil) }
                pending = piece
            }
        }
        exchange.responseBytes = upstream.responseBodyBytes
        if let lastBody, !exchange.responseChunked { add(lastBody) }
        if exchange.responseChunked {
            var buffer = context.channel.allocator.buffer(capacity: 16)
            if exchange.chunkOpen { buffer.writeStaticString("\r\n") }
            HTTPWire.writeLastChunk(&buffer)
            add(buffer)
        }
        // Only a connection about to close needs to know when the response is out (a future costs).
        let written: EventLoopFuture<Void>?
        if willClose(after: exchange) {
            written = context.writeAndFlush(wrapOutboundOut(pending ?? context.channel.allocator.buffer(capacity: 0)))
        } else {
            if let pending { context.write(wrapOutboundOut(pending), promise: nil) }
            context.flush()
            written = nil
        }
        let success = (exchange.responseStatus?.code ?? 500) < 500
        finishStats(exchange, success: success)
        detach(exchange)
        if exchange.requestEnded && exchange.upstreamKeepAlive {
            upstreams.release(upstream)
        } else {
            upstream.close()
        }
        complete(exchange, written: written)
    }

    func upstreamReadComplete(_ upstream: HTTPUpstreamHandler) {
        guard let exchange, exchange.upstream === upstream, exchange.clientNeedsFlush, let context else { return }
        exchange.clientNeedsFlush = false
        var none: ByteBuffer?
        writeHeldHead(exchange, context: context, appending: &none)
        context.flush()
    }

    func upstreamWritabilityChanged(_ upstream: HTTPUpstreamHandler) {
        guard let exchange, exchange.upstream === upstream, upstream.isWritable else { return }
        resumeClientReading()
    }

    /// The upstream connection closed or broke before the response was complete.
    func upstream(_ upstream: HTTPUpstreamHandler, didFail failure: HTTPUpstreamFailure) {
        guard let exchange, exchange.upstream === upstream else { return }
        detach(exchange)
        upstreamFailed(exchange, upstream: upstream, failure: failure)
    }

    private func upstreamFailed(_ exchange: HTTPExchange, upstream: HTTPUpstreamHandler, failure: HTTPUpstreamFailure) {
        let backend = upstream.backend
        logger.debug(
            "backend failed the request",
            metadata: [
                "backend.address": "\(backend.endpoint)", "failure": "\(failure)",
                "response.started": "\(exchange.responseStarted)",
            ])
        guard !exchange.responseStarted else {
            // Part of the response is with the client: it can only learn of the failure by the close.
            finishStats(exchange, success: false)
            exchange.phase = .finished
            closeNow()
            return
        }
        let replayable = !exchange.bodyForwarded
        if replayable && failure == .closed && upstream.requestsSent > 1 && !exchange.staleRetryUsed {
            // A reused keep-alive connection the backend had closed (the keep-alive race): not the
            // backend's fault, and the request never reached it. Once, on a fresh connection.
            abandonStats(exchange)
            exchange.staleRetryUsed = true
            exchange.forceFreshConnection = true
            exchange.preferred = backend
            dispatch(exchange)
            return
        }
        finishStats(exchange, success: false)
        exchange.tried.append(backend)
        exchange.lastFailure =
            failure == .invalidResponse
            ? HTTPRejection(.badGateway, "invalid response from backend")
            : HTTPRejection(.badGateway, "backend closed the connection")
        if exchange.isIdempotent && replayable && exchange.retriesLeft > 0 {
            exchange.retriesLeft -= 1
            dispatch(exchange)
            return
        }
        fail(exchange, exchange.lastFailure!)
    }

    // MARK: Timers

    private func startResponseTimer(after delay: TimeAmount) {
        deadline?.set(in: delay)
    }

    /// The response timeout counts from the last request byte sent, so a long upload is not cut off.
    private func responseDeadlinePassed() {
        guard let exchange, exchange.phase == .attached, !exchange.responseStarted,
            let upstream = exchange.upstream
        else { return }
        let quiet = NIODeadline.now() - exchange.lastProgress
        if quiet < responseTimeout {
            startResponseTimer(after: responseTimeout - quiet)
            return
        }
        detach(exchange)
        upstream.close()
        if !exchange.requestEnded && upstream.isWritable {
            // The backend could take more body but the client sent none.
            abandonStats(exchange)
            fail(exchange, HTTPRejection(.requestTimeout, "request body timed out"))
        } else {
            finishStats(exchange, success: false)
            fail(exchange, HTTPRejection(.gatewayTimeout, "backend timed out"))
        }
    }

    /// Between requests: the idle timeout until a byte arrives, then the request-header timeout. The first
    /// request of a connection gets the request-header timeout from the start.
    private func startWaitTimer() {
        guard !closing else {
            deadline?.clear()
            return
        }
        let useHeaderTimeout = requestBytesSeen || !hadRequest
        deadline?.set(in: useHeaderTimeout ? headerTimeout : idleTimeout)
    }

    /// The first byte of the next request: the idle wait ends, the request-header timeout starts.
    private func requestBytesArrived() {
        if exchange == nil && !requestBytesSeen {
            requestBytesSeen = true
            startWaitTimer()
        }
    }

    private func waitDeadlinePassed() {
        guard exchange == nil, !closing else { return }
        if requestBytesSeen {
            reject(HTTPRejection(.requestTimeout, "request headers timed out"), version: .http1_1)
        } else {
            closeNow()
        }
    }

    // MARK: Finishing

    /// Answers the current request (if any) from the proxy itself.
    private func fail(_ exchange: HTTPExchange, _ rejection: HTTPRejection) {
        exchange.localStatus = rejection.status
        exchange.phase = .finished
        exchange.responseStarted = true
        exchange.responseEnded = true
        let close = !exchange.requestEnded || !exchange.clientKeepAlive || draining
        if close { exchange.clientKeepAlive = false }
        let written = writeLocalResponse(rejection, version: exchange.version, close: close)
        complete(exchange, written: written)
    }

    /// Refuses what the client sent (no exchange or one that must not go on) and closes the connection.
    private func reject(_ rejection: HTTPRejection, version: HTTPVersion) {
        if let exchange {
            if exchange.responseStarted {
                closeNow()
                return
            }
            abandon(exchange)
        }
        closing = true
        deadline?.clear()
        let written = writeLocalResponse(rejection, version: version, close: true)
        closeAfter(written)
    }

    private func handleInputClosed() {
        guard let exchange else {
            closeNow()
            return
        }
        if !exchange.requestEnded {
            // The client stopped sending in the middle of a request.
            reject(HTTPRejection(.badRequest, "request incomplete"), version: exchange.version)
        } else {
            exchange.clientKeepAlive = false
        }
    }

    /// Whether the client connection closes once this exchange's response is out.
    private func willClose(after exchange: HTTPExchange) -> Bool {
        !exchange.requestEnded || !exchange.clientKeepAlive || draining || closing
    }

    /// After the response: next request, or close. `written` completes when the response is out; it is
    /// only needed (and may only be nil) when the connection stays open.
    private func complete(_ exchange: HTTPExchange, written: EventLoopFuture<Void>?) {
        exchange.logAccess(
            route, client: clientAddress, outcome: exchange.localStatus == nil ? .completed : .proxyAnswered)
        exchange.phase = .finished
        hadRequest = true
        guard self.exchange === exchange else { return }
        if willClose(after: exchange) {
            closing = true
            self.exchange = nil
            closeAfter(written ?? upstreams.eventLoop.makeSucceededVoidFuture())
            return
        }
        self.exchange = nil
        requestBytesSeen = false
        awaitingRequest = input == nil
        startWaitTimer()
        if input != nil {
            // Pipelined bytes: the next request has started already.
            requestBytesArrived()
            consumeInput()
        }
        if inputClosedPending && acceptsInput && !closing {
            inputClosedPending = false
            handleInputClosed()
        }
        dispatchIfReady()
        resumeClientReading()
    }

    private func writeLocalResponse(
        _ rejection: HTTPRejection, version: HTTPVersion, close: Bool
    )
        -> EventLoopFuture<Void>
    {
        guard let context else { return upstreams.eventLoop.makeSucceededVoidFuture() }
        let body = rejection.message + "\n"
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "text/plain; charset=utf-8")
        headers.add(name: "content-length", value: String(body.utf8.count))
        if close { headers.add(name: "connection", value: "close") }
        let responseVersion: HTTPVersion = version.major == 1 && version.minor == 0 ? .http1_0 : .http1_1
        var buffer = context.channel.allocator.buffer(capacity: 256)
        HTTPWire.writeResponseHead(&buffer, version: responseVersion, status: rejection.status, headers: headers)
        buffer.writeString(body)
        return context.writeAndFlush(wrapOutboundOut(buffer))
    }

    private func closeAfter(_ written: EventLoopFuture<Void>) {
        closing = true
        written.assumeIsolated().whenComplete { [self] _ in closeNow() }
    }

    private func closeNow() {
        closing = true
        context?.close(promise: nil)
    }

    // MARK: Backend statistics

    private func finishStats(_ exchange: HTTPExchange, success: Bool) {
        guard exchange.inFlight, let backend = exchange.backend else { return }
        exchange.inFlight = false
        exchange.accountBytes(to: backend)
        backend.connectionClosed()
        backend.stats.recordResponse(status: exchange.responseStatus.map { Int($0.code) })
        route.pool.requestFinished(
            backend, success: success, latencyNanos: exchange.latencyNanos, now: MonotonicClock.now())
    }

    /// Ends an in-flight request that says nothing about the backend (the client left, or a stale
    /// keep-alive connection): the in-flight count drops, the failure streak and latency stay.
    private func abandonStats(_ exchange: HTTPExchange) {
        guard exchange.inFlight, let backend = exchange.backend else { return }
        exchange.inFlight = false
        exchange.accountBytes(to: backend)
        backend.connectionClosed()
        backend.requestAbandoned()
    }

    private static func rejection(for error: UpstreamError) -> HTTPRejection {
        switch error {
        case .noBackendAvailable: return HTTPRejection(.serviceUnavailable, "no backend available")
        case .connectFailed: return HTTPRejection(.badGateway, "connect to backend failed")
        case .connectTimedOut: return HTTPRejection(.gatewayTimeout, "connect to backend timed out")
        }
    }
}

@available(*, unavailable)
extension HTTPProxyHandler: Sendable {}
