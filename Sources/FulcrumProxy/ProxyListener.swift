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

    /// Binds `address` on every loop of `group`. All sockets share one port (the first bind's when 0).
    public static func bind(
        _ address: Endpoint, group: any EventLoopGroup, context: ListenerContext,
        childInitializer: @escaping @Sendable (any Channel, ListenerContext) -> EventLoopFuture<Void>
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
                    // No child TCP_NODELAY option: NIO sets it on the listening socket and Linux copies it to
                    // every accepted one, which saves a setsockopt per connection. (`.socketOption(.tcp_nodelay)`,
                    // used here before, is SOL_SOCKET level: it set SO_DEBUG, whose number TCP_NODELAY shares.)
                    .childChannelOption(.allowRemoteHalfClosure, value: true)
                    .childChannelInitializer { channel in
                        context.connections.track(channel)
                        return childInitializer(channel, context)
                    }
                    .bind(to: target)
                    .get()
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
