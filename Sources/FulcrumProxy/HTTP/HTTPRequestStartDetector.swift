import NIOCore

/// Sits before the request decoder and tells the proxy handler when the first byte of the next request
/// arrives, which ends the idle wait between requests and starts the request-header timeout (slowloris).
final class HTTPRequestStartDetector: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    /// The event it fires, once per request, before the bytes themselves.
    struct RequestStarted {}

    /// Set by the proxy handler when it waits for a new request.
    var awaitingRequest = true

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if awaitingRequest, unwrapInboundIn(data).readableBytes > 0 {
            awaitingRequest = false
            context.fireUserInboundEventTriggered(RequestStarted())
        }
        context.fireChannelRead(data)
    }
}

@available(*, unavailable)
extension HTTPRequestStartDetector: Sendable {}
