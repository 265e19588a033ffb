import FulcrumCore
import NIOCore
import NIOHTTP1

/// The L7 data plane (`mode: http`): an HTTP/1.1 reverse proxy with keep-alive on both sides.
///
/// Per client connection: NIO's request decoder (header limits from `HTTPLimits`; responses are framed by `HTTPWire`),
/// then `HTTPProxyHandler`, which picks a backend per request and relays both bodies as streams over an
/// upstream connection from the event loop's own pool. Requests with ambiguous framing are refused
/// before any backend is contacted; `Expect: 100-continue` is answered by Fulcrum once a backend
/// connection is ready (the header is not forwarded).
public enum HTTPProxy {
    /// Sets up an accepted client connection; pass it to `ProxyListener.bind` for HTTP listeners.
    public static func childInitializer(channel: any Channel, context: ListenerContext) -> EventLoopFuture<Void> {
        channel.eventLoop.makeCompletedFuture {
            let route = context.current
            let detector = HTTPRequestStartDetector()
            let pipeline = channel.pipeline.syncOperations
            // NIO's request decoder only: responses are framed by the proxy handler itself (`HTTPWire`).
            try pipeline.addHandler(detector)
            try pipeline.addHandler(
                ByteToMessageHandler(HTTPRequestDecoder(limitConfiguration: HTTPLimits.requestDecoderLimits)))
            try pipeline.addHandler(
                HTTPProxyHandler(
                    route: route, logger: context.logger, detector: detector,
                    upstreams: HTTPUpstreamPool.current(on: channel.eventLoop),
                    client: IPAddress(channel.remoteAddress)))
        }
    }
}
