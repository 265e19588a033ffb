import FulcrumCore
import Logging
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// One listener bound once per event loop with SO_REUSEPORT, so the kernel spreads accepted
/// connections over the loops and each connection — and its upstream — stays on the loop that
/// accepted it. The mode-specific pipeline comes from `childInitializer`.
///
/// Accepted channels are set up synchronously by `AcceptedChannelSetup`, a handler in front of
/// ServerBootstrap's own accept handler, and then passed straight to the server channel for
/// registration (`AcceptBypass`), instead of through the bootstrap's child options, child initializer
/// and accept handler: those go through a chain of about eight futures per connection, a measurable
/// share of the CPU a `Connection: close` request costs.
public final class ProxyListener: Sendable {
    public let context: ListenerContext
    private let serverChannels: [any Channel]
    /// The address actually bound (port 0 in the config becomes a real port).
    public let localAddress: SocketAddress

    private init(context: ListenerContext, serverChannels: [any Channel], localAddress: SocketAddress) {
        self.context = context
        self.serverChannels = serverChannels
        self.localAddress = localAddress
    }

    /// Sets up an accepted connection's pipeline, on its event loop, before it is registered. Throwing closes it.
    public typealias ChildInitializer = @Sendable (any Channel, ListenerContext) throws -> Void

    /// Binds `address` on every loop of `group`. All sockets share one port (the first bind's when 0).
    public static func bind(
        _ address: Endpoint, group: any EventLoopGroup, context: ListenerContext,
        childInitializer: @escaping ChildInitializer
    ) async throws -> ProxyListener {
        var channels: [any Channel] = []
        var target = try address.socketAddress()
        do {
            for loop in group.makeIterator() {
                let channel = try await ServerBootstrap(group: loop)
                    .serverChannelOption(.backlog, value: 1024)
                    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                    .serverChannelOption(
                        ChannelOptions.Types.SocketOption(
                            level: .socket, name: NIOBSDSocket.Option(rawValue: SO_REUSEPORT)), value: 1
                    )
                    // No child options and no child initializer: `AcceptedChannelSetup` does both without futures.
                    .serverChannelInitializer { server in
                        server.eventLoop.makeCompletedFuture {
                            try server.pipeline.syncOperations.addHandler(
                                AcceptedChannelSetup(context: context, initializer: childInitializer))
                        }
                    }
                    .bind(to: target)
                    .get()
                try await channel.eventLoop.submit {
                    // Behind ServerBootstrap's accept handler (added after our initializer ran): see `AcceptBypass`.
                    let bypass = AcceptBypass()
                    try channel.pipeline.syncOperations.addHandler(bypass, position: .last)
                    try channel.pipeline.syncOperations.handler(type: AcceptedChannelSetup.self).bypass = bypass
                }.get()
                if channels.isEmpty, let bound = channel.localAddress { target = bound }
                channels.append(channel)
            }
        } catch {
            for channel in channels { try? await channel.close() }
            throw error
        }
        context.logger.info(
            "listening",
            metadata: [
                "bind": .string("\(target.ipAddress ?? "?"):\(target.port ?? 0)"),
                "sockets": .stringConvertible(channels.count),
            ])
        return ProxyListener(context: context, serverChannels: channels, localAddress: target)
    }

    /// The bound port.
    public var port: Int { localAddress.port ?? 0 }

    /// Stops accepting new connections; established ones continue.
    public func stopAccepting() async {
        for channel in serverChannels { try? await channel.close() }
    }

    /// Stops accepting, lets connections finish for up to `grace`, then closes the rest.
    public func shutdown(grace: Duration) async {
        await stopAccepting()
        await context.connections.drain(grace: grace)
    }
}

/// The first handler of a listening channel: configures each accepted channel in place — half-close
/// allowed, tracked for draining, the mode's handlers added — and hands it to the server channel,
/// which registers it when it reaches the end of the pipeline. It is fired from `AcceptBypass`, the
/// last handler, so ServerBootstrap's accept handler in between (with no child options or
/// initializer to apply it would only add futures) is skipped; until the bypass is in place (the
/// moment after bind) it goes the ordinary way, through that handler. Accepted channels share the
/// listening channel's event loop.
///
/// TCP_NODELAY is not set here: NIO sets it on the listening socket and Linux copies it to every
/// accepted one, which saves a setsockopt per connection. (`.socketOption(.tcp_nodelay)` would be
/// SOL_SOCKET level and set SO_DEBUG, whose number TCP_NODELAY shares.)
final class AcceptedChannelSetup: ChannelInboundHandler {
    typealias InboundIn = any Channel
    typealias InboundOut = any Channel

    private let context: ListenerContext
    private let initializer: ProxyListener.ChildInitializer
    var bypass: AcceptBypass?

    init(context: ListenerContext, initializer: @escaping ProxyListener.ChildInitializer) {
        self.context = context
        self.initializer = initializer
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let child = Self.unwrapInboundIn(data)
        guard context.channel.isActive else {
            // The listener is closing (ServerBootstrap's accept handler does the same).
            child.close(promise: nil)
            return
        }
        do {
            child.eventLoop.preconditionInEventLoop()
            // Before the initializer: a handler may rely on half-close from its first read.
            try child.syncOptions?.setOption(.allowRemoteHalfClosure, value: true)
            try initializer(child, self.context)
        } catch {
            self.context.logger.debug("closing accepted connection: setup failed", metadata: ["error": "\(error)"])
            child.close(promise: nil)
            return
        }
        self.context.connections.track(child)
        if let bypass, bypass.forward(data) { return }
        context.fireChannelRead(data)
    }
}

/// The last handler of a listening channel, after ServerBootstrap's accept handler: what it fires goes
/// to the pipeline's end, where the server channel registers the accepted channel and makes it active.
/// `AcceptedChannelSetup` fires set-up channels from here. Everything else passes through unchanged.
final class AcceptBypass: ChannelInboundHandler {
    typealias InboundIn = NIOAny
    typealias InboundOut = NIOAny

    private var context: ChannelHandlerContext?

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    /// Fires `data` (an accepted channel) towards the server channel; false when not in a pipeline.
    func forward(_ data: NIOAny) -> Bool {
        guard let context else { return false }
        context.fireChannelRead(data)
        return true
    }
}

@available(*, unavailable)
extension AcceptedChannelSetup: Sendable {}

@available(*, unavailable)
extension AcceptBypass: Sendable {}
