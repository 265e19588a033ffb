import NIOCore
import NIOHTTP1

/// Turns one ``DemoHTTPClientHandler/Exchange`` written into the pipeline into request parts, and the response
/// parts into a ``DemoResponse``; fails the exchange on timeout, error or close.
final class DemoHTTPClientHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = Exchange
    typealias OutboundOut = HTTPClientRequestPart

    /// A request and the promise of its response.
    struct Exchange: Sendable {
        var request: DemoRequest
        var timeout: Duration
        var promise: EventLoopPromise<DemoResponse>
    }

    private var exchange: Exchange?
    private var responseHead: HTTPResponseHead?
    private var body = ByteBuffer()
    private var bodyLength = 0
    private var timeoutTask: Scheduled<Void>?

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let exchange = self.unwrapOutboundIn(data)
        promise?.succeed()
        guard self.exchange == nil else {
            exchange.promise.fail(DemoError.requestInFlight)
            return
        }
        guard context.channel.isActive else {
            exchange.promise.fail(DemoError.connectionClosed)
            return
        }
        self.exchange = exchange
        self.responseHead = nil
        self.body = context.channel.allocator.buffer(capacity: 0)
        self.bodyLength = 0
        let timeout = exchange.timeout
        self.timeoutTask = context.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(timeout)) {
            self.timeoutTask = nil
            self.fail(DemoError.timedOut(timeout))
            context.close(promise: nil)
        }

        let request = exchange.request
        var headers = HTTPHeaders(request.headers.map { ($0.name, $0.value) })
        if let body = request.body, !headers.contains(name: "Content-Length") {
            headers.add(name: "Content-Length", value: String(body.readableBytes))
        }
        let head = HTTPRequestHead(
            version: .http1_1,
            method: HTTPMethod(rawValue: request.method),
            uri: request.path,
            headers: headers
        )
        context.write(self.wrapOutboundOut(.head(head)), promise: nil)
        if let body = request.body, body.readableBytes > 0 {
            context.write(self.wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        }
        context.writeAndFlush(self.wrapOutboundOut(.end(nil))).assumeIsolated().whenFailure { error in
            self.fail(error)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.responseHead = head
        case .body(var part):
            self.bodyLength += part.readableBytes
            if self.exchange?.request.collectBody ?? false {
                self.body.writeBuffer(&part)
            }
        case .end:
            guard let exchange = self.exchange, let head = self.responseHead else { return }
            if head.status.code < 200, head.status != .switchingProtocols {
                // An interim response (100 Continue): the real one follows.
                self.responseHead = nil
                return
            }
            let response = DemoResponse(
                status: Int(head.status.code),
                headers: head.headers.map { (name: $0.name, value: $0.value) },
                body: self.body,
                bodyLength: self.bodyLength,
                isKeepAlive: head.isKeepAlive
            )
            self.reset()
            exchange.promise.succeed(response)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.fail(DemoError.connectionClosed)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.fail(error)
        context.close(promise: nil)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.fail(DemoError.connectionClosed)
    }

    private func fail(_ error: any Error) {
        guard let exchange = self.exchange else { return }
        self.reset()
        exchange.promise.fail(error)
    }

    private func reset() {
        self.exchange = nil
        self.responseHead = nil
        self.body = ByteBuffer()
        self.bodyLength = 0
        self.timeoutTask?.cancel()
        self.timeoutTask = nil
    }
}

@available(*, unavailable)
extension DemoHTTPClientHandler: Sendable {}
