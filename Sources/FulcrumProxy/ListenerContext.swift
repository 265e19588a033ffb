import FulcrumConfig
import FulcrumCore
import Logging
import NIOCore
import Synchronization

/// What a listener proxies to: its config and its pool. Replaced as a whole on reload, read once per
/// connection, so a connection keeps the route it started with.
public struct ListenerRoute: Sendable {
    /// Fixed for the route's lifetime: `timeouts` is derived from it.
    public let config: ListenerConfig
    public var pool: Pool
    /// What hash-family algorithms hash for this listener's requests.
    public var hashKey: HashKey
    /// Where finished requests and connections are logged; nil when the access log is off.
    public var accessLog: AccessLog?
    /// `config.timeouts` as NIO time amounts, converted once per route rather than per connection.
    let timeouts: ProxyTimeouts

    public init(config: ListenerConfig, pool: Pool, hashKey: HashKey, accessLog: AccessLog? = nil) {
        self.config = config
        self.timeouts = ProxyTimeouts(config.timeouts)
        self.pool = pool
        self.hashKey = hashKey
        self.accessLog = accessLog
    }
}

/// A listener's timeouts in the unit the data path arms timers with.
struct ProxyTimeouts: Sendable {
    let connect: TimeAmount
    let idle: TimeAmount
    let requestHeaders: TimeAmount
    let response: TimeAmount

    init(_ timeouts: ListenerTimeouts) {
        connect = TimeAmount(timeouts.connect)
        idle = TimeAmount(timeouts.idle)
        requestHeaders = TimeAmount(timeouts.requestHeaders)
        response = TimeAmount(timeouts.response)
    }
}

/// Shared by every per-event-loop socket of one listener: the current route, the live connections
/// (for draining) and the logger.
public final class ListenerContext: Sendable {
    public let name: String
    public let logger: Logger
    public let connections = ConnectionTracker()
    private let route: Mutex<ListenerRoute>

    public init(route: ListenerRoute, logger: Logger) {
        name = route.config.name
        self.route = Mutex(route)
        var logger = logger
        logger[metadataKey: "listener"] = .string(route.config.name)
        self.logger = logger
    }

    public var current: ListenerRoute { route.withLock { $0 } }

    public func update(_ newRoute: ListenerRoute) {
        route.withLock { $0 = newRoute }
    }
}

/// Sent down a connection's pipeline when its listener drains (shutdown, reload removed it):
/// handlers finish what is in flight and close (HTTP: after the current response).
public struct ListenerDrainEvent: Sendable {
    public init() {}
}

/// The live client connections of a listener, so shutdown can drain them and then close the rest.
/// Kept in numbered slots rather than a dictionary: tracking a connection costs an array store under
/// the lock, not two hashed dictionary updates (this runs for every accepted connection).
public final class ConnectionTracker: Sendable {
    private struct Slots {
        var channels: [(any Channel)?] = []
        /// Slots whose channel closed, reused first.
        var free: [Int] = []
        var count = 0
    }

    private let slots = Mutex(Slots())
    private let acceptedTotal = Atomic<UInt64>(0)

    public init() {}

    public var count: Int { slots.withLock { $0.count } }
    /// Connections accepted since the listener started.
    public var accepted: UInt64 { acceptedTotal.load(ordering: .relaxed) }

    /// Tracks `channel` until it closes.
    public func track(_ channel: any Channel) {
        acceptedTotal.wrappingAdd(1, ordering: .relaxed)
        let slot = slots.withLock { slots in
            slots.count += 1
            if let slot = slots.free.popLast() {
                slots.channels[slot] = channel
                return slot
            }
            slots.channels.append(channel)
            return slots.channels.count - 1
        }
        channel.closeFuture.whenComplete { _ in
            self.slots.withLock { slots in
                slots.channels[slot] = nil
                slots.free.append(slot)
                slots.count -= 1
            }
        }
    }

    private var open: [any Channel] { slots.withLock { $0.channels.compactMap { $0 } } }

    /// Asks every connection to finish and close; after `grace`, closes what is left.
    /// Returns when no tracked connection remains.
    public func drain(grace: Duration) async {
        for channel in open {
            channel.pipeline.fireUserInboundEventTriggered(ListenerDrainEvent())
        }
        let deadline = ContinuousClock.now + grace
        var step = Duration.milliseconds(5)
        while count > 0 && ContinuousClock.now < deadline {
            try? await Task.sleep(for: min(step, deadline - ContinuousClock.now))
            step = min(step * 2, .milliseconds(100))
        }
        let left = open
        for channel in left { channel.close(promise: nil) }
        for channel in left { try? await channel.closeFuture.get() }
    }
}
