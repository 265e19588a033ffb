import FulcrumConfig
import FulcrumCore
import Logging
import NIOCore

/// L4 proxying (`mode: tcp`). Each accepted connection gets a backend picked once from the pool's
/// current snapshot, a connection to it on the same event loop (retrying other backends), an optional
/// PROXY protocol header, and then byte-exact relaying both ways with backpressure, half-close and an
/// idle timeout. Nothing is read from the client until the backend has accepted.
public enum TCPProxy {
    /// The pipeline of a connection accepted by a TCP-mode `ProxyListener`.
    public static func childInitializer(channel: any Channel, context: ListenerContext) throws {
        try accept(channel, context: context, stats: nil)
    }

    /// The same pipeline, counting flows, bytes and queued bytes into `statistics`.
    public static func childInitializer(
        statistics: TCPProxyStatistics
    ) -> ProxyListener.ChildInitializer {
        { channel, context in try accept(channel, context: context, stats: statistics) }
    }

    /// The pick key's hash for a client: its address, or its 5-tuple when the listener hashes `flow`.
    /// HTTP-only keys (header, cookie, URI) fall back to the address.
    public static func keyHash(hashKey: HashKey, client: SocketAddress?, local: SocketAddress?) -> UInt64 {
        guard let source = IPAddress(client) else { return 0 }
        guard case .flow = hashKey, let destination = IPAddress(local) else {
            return StableHash.hash(source)
        }
        return StableHash.hash(
            source: source, sourcePort: UInt16(truncatingIfNeeded: client?.port ?? 0), destination: destination,
            destinationPort: UInt16(truncatingIfNeeded: local?.port ?? 0), protocol: 6)
    }

    /// Runs on the client's event loop, before the client channel is registered.
    static func accept(_ client: any Channel, context: ListenerContext, stats: TCPProxyStatistics?) throws {
        client.eventLoop.preconditionInEventLoop()
        let route = context.current
        let acceptedAt = MonotonicClock.now()
        let clientAddress = client.remoteAddress
        let idle = route.timeouts.idle
        let linger = idle > .zero ? idle : .seconds(60)
        // Present from the start, so nothing the client sends is read (or lost) before the upstream is there.
        let clientSide = TCPGlueHandler(
            isClientSide: true, statistics: stats, logger: context.logger, lingerTimeout: linger,
            idleTimeout: idle > .zero ? idle : nil)
        try client.pipeline.syncOperations.addHandler(clientSide)
        let snapshot = route.pool.snapshot()
        let hash =
            snapshot.algorithm.usesKey
            ? keyHash(hashKey: route.hashKey, client: client.remoteAddress, local: client.localAddress) : 0
        let connector = UpstreamConnector(connectTimeout: route.timeouts.connect)
        let logger = context.logger
        connector.connect(
            pool: route.pool, snapshot: snapshot, key: PickKey(hash: hash, now: MonotonicClock.now()),
            retries: route.config.retries, on: client.eventLoop,
            initializer: { upstream in
                try upstream.pipeline.syncOperations.addHandler(
                    TCPGlueHandler(isClientSide: false, statistics: stats, logger: logger, lingerTimeout: linger))
            }
        )
        .assumeIsolated()
        .whenComplete { result in
            switch result {
            case .success(let upstream):
                glue(
                    client: client, clientSide: clientSide, upstream: upstream, route: route, statistics: stats,
                    acceptedAt: acceptedAt)
            case .failure(let error):
                if let accessLog = route.accessLog {
                    accessLog.record(
                        AccessLogRecord(
                            kind: .tcp, time: AccessLogRecord.wallClockNow(), listener: route.config.name,
                            client: clientAddress, backend: nil, bytesIn: 0, bytesOut: 0,
                            durationNanos: MonotonicClock.now() &- acceptedAt, retries: 0, outcome: .noUpstream))
                }
                logger.debug(
                    "closing client connection: no upstream",
                    metadata: [
                        "client": .string(client.remoteAddress.map { "\($0)" } ?? "?"),
                        "pool": .string(route.pool.name), "reason": .string("\(error)"),
                    ])
                client.close(promise: nil)
            }
        }
    }

    private static func glue(
        client: any Channel, clientSide: TCPGlueHandler, upstream connection: UpstreamConnection,
        route: ListenerRoute, statistics: TCPProxyStatistics?, acceptedAt: UInt64
    ) {
        let upstream = connection.channel
        let backend = connection.backend
        route.pool.reportOutcome(backend, success: true, now: MonotonicClock.now())
        guard client.isActive else {
            upstream.close(promise: nil)
            return
        }
        let upstreamSide: TCPGlueHandler
        do {
            upstreamSide = try upstream.pipeline.syncOperations.handler(type: TCPGlueHandler.self)
        } catch {
            clientSide.currentLogger.debug("closing TCP flow: setup failed", metadata: ["error": .string("\(error)")])
            client.close(promise: nil)
            upstream.close(promise: nil)
            return
        }
        backend.connectionOpened()
        statistics?.flowOpened()
        let registration = backend.connections.register {
            client.close(promise: nil)
            upstream.close(promise: nil)
        }
        let connectedAt = MonotonicClock.now()
        // Read now: NIO forgets a channel's addresses when it closes.
        let clientAddress = client.remoteAddress
        client.closeFuture.and(upstream.closeFuture).assumeIsolated().whenComplete { _ in
            backend.connections.unregister(registration)
            backend.connectionClosed()
            statistics?.flowClosed()
            if let accessLog = route.accessLog {
                accessLog.record(
                    AccessLogRecord(
                        kind: .tcp, time: AccessLogRecord.wallClockNow(), listener: route.config.name,
                        client: clientAddress, backend: backend.name, bytesIn: clientSide.relayedBytes,
                        bytesOut: upstreamSide.relayedBytes, durationNanos: MonotonicClock.now() &- acceptedAt,
                        connectNanos: connectedAt &- acceptedAt, retries: connection.failedAttempts,
                        outcome: .completed))
            }
        }
        // The header goes first, before anything the client already sent.
        if route.config.proxyProtocol != .none {
            let header = ProxyProtocolHeader(source: client.remoteAddress, destination: client.localAddress)
                .encoded(route.config.proxyProtocol)
            upstream.writeAndFlush(upstream.allocator.buffer(bytes: header), promise: nil)
        }
        TCPGlueHandler.glue(client: clientSide, upstream: upstreamSide, backend: backend)
    }
}
