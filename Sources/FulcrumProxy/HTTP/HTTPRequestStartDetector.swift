import NIOCore

/// Sits before the request decoder and tells the proxy handler when the first byte of the next request
/// arrives, which ends the idle wait between requests and starts the request-header timeout (slowloris).
/// It calls the handler directly rather than firing a pipeline event: no dynamic cast per request.
final class HTTPRequestStartDetector: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    /// Set by the proxy handler when it waits for a new request.
    var awaitingRequest = true
    /// The proxy handler's callback; cleared when it is removed (breaks the reference cycle).
    var onRequestStart: (() -> Void)?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if awaitingRequest, unwrapInboundIn(data).readableBytes > 0 {
            awaitingRequest = false
            onRequestStart?()
        }
        context.fireChannelRead(data)
    }
}

@available(*, unavailable)
extension HTTPRequestStartDetector: Sendable {}
