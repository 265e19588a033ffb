import NIOCore
import NIOHTTP1

/// Serves the routes of one ``DemoBackend`` connection. Sits after `configureHTTPServerPipeline`, which hands
/// it one request at a time; everything here runs on the connection's event loop.
final class DemoHTTPHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    enum Route: Equatable {
        case root
        case healthz
        case echo
        case bytes(Int)
        case status(Int)
        case headers
        case closeWithoutResponse
        case slow(Duration)
        case badRequest(String)
    }

    /// Size of one `/bytes` write; small enough that writability is checked often.
    static let chunkSize = 16 * 1024
    /// Bytes written for `/bytes` in one go before yielding the event loop to other connections.
    static let bytesPerTurn = 1024 * 1024
    /// `chunkSize + 251` bytes of the pattern, so any chunk is one slice of it.
    static let pattern: [UInt8] = (0..<(chunkSize + 251)).map { DemoBackend.patternByte(at: $0) }

    private let state: DemoBackendState
    private var request: HTTPRequestHead?
    private var route = Route.root
    private var keepAlive = true
    /// From a request's head until its response's end has been written.
    private var responding = false
    private var inputClosed = false
    private var channelActive = true
    /// A read held back while `/echo` output is not writable.
    private var readPending = false
    private var delayedResponse: Scheduled<Void>?
    private var bytesRemaining = 0
    private var bytesOffset = 0

    init(state: DemoBackendState) {
        self.state = state
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.requestStarted(context: context, head: head)
        case .body(let body):
            if self.route == .echo, self.channelActive {
                self.state.bodyBytesSent(body.readableBytes)
                context.write(self.wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
            }
        case .end:
            self.requestEnded(context: context)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if self.route == .echo {
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            if self.readPending {
                self.readPending = false
                context.read()
            }
            if self.bytesRemaining > 0 {
                self.writeBytes(context: context)
            }
        }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            // The client half-closed: answer what is in progress, then close.
            self.inputClosed = true
            if !self.responding {
                context.close(promise: nil)
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.stopWork()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.stopWork()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    // MARK: Outbound

    /// Holds reads back while echoed output cannot be written, so a large upload is never buffered.
    func read(context: ChannelHandlerContext) {
        if self.route == .echo, self.responding, !context.channel.isWritable {
            self.readPending = true
        } else {
            context.read()
        }
    }

    // MARK: Requests

    private func requestStarted(context: ChannelHandlerContext, head: HTTPRequestHead) {
        let path = String(head.uri.prefix { $0 != "?" })
        self.state.requestReceived(path: path)
        self.request = head
        self.route = Self.route(method: head.method, path: path)
        self.keepAlive = head.isKeepAlive
        self.responding = true
        if self.route == .echo {
            if head.version.major == 1, head.version.minor == 0 {
                // No chunked encoding in HTTP/1.0: the end of the body is the end of the connection.
                self.keepAlive = false
            }
            context.write(self.wrapOutboundOut(.head(self.responseHead(status: .ok))), promise: nil)
        }
    }

    private func requestEnded(context: ChannelHandlerContext) {
        guard self.responding, self.channelActive else { return }
        switch self.route {
        case .echo:
            self.finishResponse(context: context)
        case .root:
            self.respondAfter(self.state.behavior.latency, context: context) { handler, context in
                if handler.state.nextRootRequestFails() {
                    handler.respond(context: context, status: .internalServerError, body: "error\n")
                } else {
                    handler.respond(context: context, status: .ok, body: "\(handler.state.name)\n")
                }
            }
        case .slow(let delay):
            self.respondAfter(delay, context: context) { handler, context in
                handler.respond(context: context, status: .ok, body: "\(handler.state.name)\n")
            }
        case .healthz:
            if self.state.isHealthy() {
                self.respond(context: context, status: .ok, body: "ok")
            } else {
                self.respond(context: context, status: .serviceUnavailable, body: "unhealthy")
            }
        case .status(let code):
            let status = HTTPResponseStatus(statusCode: code)
            let bodyless = code == 204 || code == 304
            self.respond(context: context, status: status, body: bodyless ? nil : "status \(code)\n")
        case .headers:
            let lines = (self.request?.headers ?? [:]).map { "\($0.name): \($0.value)\n" }.joined()
            self.respond(context: context, status: .ok, body: lines)
        case .bytes(let count):
            self.startBytes(context: context, count: count)
        case .closeWithoutResponse:
            self.responding = false
            context.close(promise: nil)
        case .badRequest(let message):
            self.keepAlive = false
            self.respond(context: context, status: .badRequest, body: message + "\n")
        }
    }

    static func route(method: HTTPMethod, path: String) -> Route {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count >= 2, parts[0].isEmpty else { return .root }
        switch (parts[1], parts.count) {
        case ("healthz", 2): return .healthz
        case ("echo", 2) where method == .POST || method == .PUT: return .echo
        case ("headers", 2): return .headers
        case ("close-without-response", 2): return .closeWithoutResponse
        case ("bytes", 3):
            guard let count = Int(parts[2]), count >= 0 else { return .badRequest("bad byte count") }
            return .bytes(count)
        case ("status", 3):
            guard let code = Int(parts[2]), (200...599).contains(code) else { return .badRequest("bad status") }
            return .status(code)
        case ("slow", 3):
            guard let ms = Int(parts[2]), ms >= 0 else { return .badRequest("bad delay") }
            return .slow(.milliseconds(ms))
        default: return .root
        }
    }

    // MARK: Responses

    private func responseHead(status: HTTPResponseStatus, contentLength: Int? = nil) -> HTTPResponseHead {
        var headers = HTTPHeaders()
        headers.add(name: "X-Backend", value: self.state.name)
        if let contentLength {
            headers.add(name: "Content-Type", value: "text/plain")
            headers.add(name: "Content-Length", value: String(contentLength))
        } else {
            headers.add(name: "Content-Type", value: "application/octet-stream")
        }
        let version = self.request?.version ?? .http1_1
        if !self.keepAlive || self.inputClosed {
            if version.minor >= 1 { headers.add(name: "Connection", value: "close") }
        } else if version.minor == 0 {
            headers.add(name: "Connection", value: "keep-alive")
        }
        return HTTPResponseHead(version: version, status: status, headers: headers)
    }

    /// Writes a whole response; `body` nil means no body and no `Content-Length` (204, 304).
    private func respond(context: ChannelHandlerContext, status: HTTPResponseStatus, body: String?) {
        guard self.channelActive else { return }
        var head = self.responseHead(status: status, contentLength: body?.utf8.count ?? 0)
        if body == nil {
            head.headers.remove(name: "Content-Length")
            head.headers.remove(name: "Content-Type")
        }
        context.write(self.wrapOutboundOut(.head(head)), promise: nil)
        if let body, !body.isEmpty, self.request?.method != .HEAD {
            let buffer = context.channel.allocator.buffer(string: body)
            context.write(self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        self.finishResponse(context: context)
    }

    private func respondAfter(
        _ delay: Duration,
        context: ChannelHandlerContext,
        _ respond: @escaping (DemoHTTPHandler, ChannelHandlerContext) -> Void
    ) {
        guard delay > .zero else {
            respond(self, context)
            return
        }
        self.delayedResponse = context.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(delay)) {
            self.delayedResponse = nil
            respond(self, context)
        }
    }

    private func startBytes(context: ChannelHandlerContext, count: Int) {
        let head = self.responseHead(status: .ok, contentLength: count)
        context.write(self.wrapOutboundOut(.head(head)), promise: nil)
        guard self.request?.method != .HEAD, count > 0 else {
            self.finishResponse(context: context)
            return
        }
        context.flush()
        self.bytesRemaining = count
        self.bytesOffset = 0
        self.writeBytes(context: context)
    }

    /// Writes `/bytes` chunks while the channel is writable; resumes on `channelWritabilityChanged`.
    private func writeBytes(context: ChannelHandlerContext) {
        var writtenThisTurn = 0
        while self.bytesRemaining > 0, self.channelActive, context.channel.isWritable {
            if writtenThisTurn >= Self.bytesPerTurn {
                // Let the event loop serve its other connections; come back on the next tick.
                context.eventLoop.assumeIsolated().execute {
                    if self.bytesRemaining > 0, context.channel.isWritable { self.writeBytes(context: context) }
                }
                return
            }
            let size = min(Self.chunkSize, self.bytesRemaining)
            let start = self.bytesOffset % 251
            let buffer = context.channel.allocator.buffer(bytes: Self.pattern[start..<(start + size)])
            self.bytesOffset += size
            self.bytesRemaining -= size
            writtenThisTurn += size
            self.state.bodyBytesSent(size)
            context.writeAndFlush(self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        if self.bytesRemaining == 0, self.responding, self.channelActive {
            self.finishResponse(context: context)
        }
    }

    /// Writes the end of the response, then closes if the client asked for it or half-closed.
    private func finishResponse(context: ChannelHandlerContext) {
        let shouldClose = !self.keepAlive || self.inputClosed
        // Reset first: writing `.end` may deliver the next pipelined request to this handler at once.
        self.responding = false
        self.route = .root
        self.request = nil
        self.bytesRemaining = 0
        let written = context.writeAndFlush(self.wrapOutboundOut(.end(nil)))
        if shouldClose {
            let channel = context.channel
            written.whenComplete { _ in channel.close(promise: nil) }
        }
    }

    private func stopWork() {
        self.channelActive = false
        self.bytesRemaining = 0
        self.delayedResponse?.cancel()
        self.delayedResponse = nil
    }
}

@available(*, unavailable)
extension DemoHTTPHandler: Sendable {}
