import FulcrumCore
import NIOCore

/// The L7 data plane (`mode: http`): an HTTP/1.1 reverse proxy with keep-alive on both sides.
///
/// One handler per client connection, `HTTPProxyHandler`: it parses request heads in place
/// (`HTTPRequestHeadParser`, limits from `HTTPLimits`), splices the header changes into the head it sends
/// upstream, forwards body bytes as they came once their framing is checked, frames responses itself
/// (`HTTPWire`), and picks a backend per request over an upstream connection from the event loop's own
/// pool. Requests with ambiguous framing are refused before any backend is contacted;
/// `Expect: 100-continue` is answered by Fulcrum once a backend connection is ready (the header is not
/// forwarded).
public enum HTTPProxy {
    /// Sets up an accepted client connection; pass it to `ProxyListener.bind` for HTTP listeners.
    public static func childInitializer(channel: any Channel, context: ListenerContext) throws {
        try channel.pipeline.syncOperations.addHandler(
            HTTPProxyHandler(
                route: context.current, logger: context.logger,
                upstreams: HTTPUpstreamPool.current(on: channel.eventLoop),
                client: IPAddress(channel.remoteAddress)))
    }
}
